"""`hsplit compare` in two source trees, side by side: interleaved pairs (the order alternating), each command
starting its own Ray, on run_overhead's scenario (pretrained MiniLM, SST-2) with few iterations, two variants x
two seeds, trained on Ray actors (the default) or in-process (`--local`). Reports the whole command's time with
the paired difference's mean and 95% CI, and checks both trees give the same comparison table.

    git worktree add /tmp/before REV
    HF_HUB_OFFLINE=1 .venv/bin/python bench/compare_ab.py /tmp/before . --pairs 3 [--local]
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


def scenario(iterations: int, local: bool) -> dict:
    raw = json.loads(json.dumps(SCENARIO)) | {"local_iterations": iterations}
    raw["train"] = raw["train"] | {"local": local}
    raw["compare"] = {"variants": {"sfl": {"method": "sfl"}, "splitlora": {"method": "splitlora", "rank": 4}},
                      "seeds": [0, 1]}
    return raw


def one_compare(tree: Path, raw: dict) -> tuple[float, pd.DataFrame]:
    """(whole command, the per-seed table's metrics) of one `hsplit compare` from the sources in `tree`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_text(yaml.safe_dump(raw))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(tree)}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "hsplit_actors.cli", "compare", str(path), "--out",
                               f"{tmp}/cmp", "--quiet"], cwd=tree, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        table = pd.read_csv(f"{tmp}/cmp/per_seed.csv")
    return wall, table.sort_values(["variant", "seed"])[["variant", "seed", "final_metric"]].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--local", action="store_true", help="train.local: each run in its trial's process")
    args = parser.parse_args()
    raw = scenario(args.iterations, args.local)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    walls: dict[str, list[float]] = {"before": [], "after": []}
    reference = None
    for i in range(args.pairs):
        for name in (("before", "after") if i % 2 == 0 else ("after", "before")):
            wall, table = one_compare(trees[name], raw)
            if reference is None:
                reference = table
            pd.testing.assert_frame_equal(table, reference)  # the same results from both trees, every time
            walls[name].append(wall)
            print(f"pair {i + 1} {name:6s} whole {wall:6.2f} s", flush=True)
    mean, half, _ = mean_ci(pd.Series([b - a for b, a in zip(walls["before"], walls["after"], strict=True)]))
    print(f"whole command ({'in-process' if args.local else 'Ray actors'}): median "
          f"{statistics.median(walls['before']):.2f} s before, {statistics.median(walls['after']):.2f} s after; "
          f"paired difference {mean:.2f} ± {half:.2f} s (95% CI, {args.pairs} pairs); identical tables")


if __name__ == "__main__":
    main()
