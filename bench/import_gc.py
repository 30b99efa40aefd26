"""What pausing the garbage collector saves on the import a host actor makes (torch, transformers, peft).

Run it several times alternating the two modes, each in a fresh process (imports happen once per process):

    for i in 1 2 3 4 5 6 7; do for m in plain paused; do
        HF_HUB_OFFLINE=1 .venv/bin/python bench/import_gc.py $m; done; done
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext

from hsplit_actors.collector import collector_paused


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "paused"
    if mode not in ("plain", "paused"):
        sys.exit("usage: import_gc.py plain|paused")
    start = time.perf_counter()
    with collector_paused() if mode == "paused" else nullcontext():
        from hsplit_actors.training.hosts import ClientHost, ServerHost  # noqa: F401 - the import is what is timed
    print(f"{mode} {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
