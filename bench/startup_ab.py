"""Start-up of `hsplit run` in two source trees, side by side: interleaved pairs (the order alternating), each run
starting its own Ray, on run_overhead's scenario with few iterations. Reports the whole command and the time
before the first training step (`meta.json` start-up less what came after the last step), with the paired
difference's mean and 95% CI.

    git worktree add /tmp/before REV
    .venv/bin/python bench/startup_ab.py /tmp/before . --pairs 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run_overhead import SCENARIO  # noqa: E402
from hsplit_actors.comparison.stats import mean_ci  # noqa: E402


def one_run(tree: Path, raw: dict, python: str = sys.executable) -> tuple[float, float, dict]:
    """(whole command, before the first step, meta) of one `hsplit run` from the sources in `tree`, run by
    `python` (another virtual environment: a change of dependencies)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_text(yaml.safe_dump(raw))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(tree)}
        start = time.perf_counter()
        done = subprocess.run([python, "-m", "hsplit_actors.cli", "run", str(path), "--out",
                               f"{tmp}/run", "--quiet"], cwd=tree, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        meta = json.loads(Path(f"{tmp}/run/meta.json").read_text())
    return wall, meta["startup_s"] - meta["startup"]["other_s"], meta


def ci95(values: list[float]) -> tuple[float, float]:
    mean, half, _ = mean_ci(pd.Series(values))
    return mean, half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--python-before", default=sys.executable, help="the interpreter of `before` runs")
    parser.add_argument("--python-after", default=sys.executable, help="the interpreter of `after` runs")
    args = parser.parse_args()
    raw = json.loads(json.dumps(SCENARIO)) | {"local_iterations": args.iterations}
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    runs: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    for i in range(args.pairs):
        for name in (("before", "after") if i % 2 == 0 else ("after", "before")):
            wall, first, meta = one_run(trees[name], raw, getattr(args, f"python_{name}"))
            runs[name].append((wall, first))
            hosts = meta.get("host_startup_s", {})
            imports = [h.get("import_s", float("nan"))
                       for h in [hosts.get("server", {}), *hosts.get("client_hosts", [])]]
            server_wait = hosts.get("server", {}).get("wait_for_assets_s", float("nan"))  # assets made meanwhile
            print(f"pair {i + 1} {name:6s} whole {wall:6.2f} s  before the first step {first:6.2f} s  "
                  f"hosts' imports (server, clients) {', '.join(f'{s:.2f}' for s in imports)} s  "
                  f"server: import to build {server_wait:.2f} s  "
                  f"coordinator imported {meta.get('coordinator_libraries', '?')}", flush=True)
    for k, label in ((0, "whole command"), (1, "before the first step")):
        diffs = [b[k] - a[k] for b, a in zip(runs["before"], runs["after"], strict=True)]
        mean, half = ci95(diffs)
        medians = [statistics.median(r[k] for r in runs[n]) for n in ("before", "after")]
        print(f"{label}: median {medians[0]:.2f} s before, {medians[1]:.2f} s after; paired difference "
              f"{mean:.2f} ± {half:.2f} s (95% CI, {args.pairs} pairs)")


if __name__ == "__main__":
    main()
