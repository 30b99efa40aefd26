"""The next run in one Ray session, in the kept actors against new ones, side by side (a notebook calling `run`
again, the API, a test session).

One driver, one local Ray; run_overhead's scenario (pretrained MiniLM, SST-2) with few iterations, `--pairs`
pairs, the order alternating: "new" ends the kept crew first, so its run starts a coordinator and hosts that
import torch, transformers and peft; "kept" rebuilds its hosts in the previous run's processes. A first run
(discarded) makes the first crew. Reported: start-up before the first step and the whole `run` call, mean ± 95%
CI of the paired difference; the tables must be identical in every run.

    HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled python bench/kept_actors.py [--pairs 5] [--iterations 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run_overhead import SCENARIO  # noqa: E402
from hsplit_actors.comparison.stats import mean_ci  # noqa: E402


def one_run(scenario, out: Path, kept: bool) -> tuple[float, float, pd.DataFrame, bool]:
    """(whole `run` call, before the first step, rounds less wall time, whether the actors were kept)."""
    from hsplit_actors.training.actors import end_kept_crews
    from hsplit_actors.training.run import run

    if not kept:
        end_kept_crews()
    start = time.perf_counter()
    _, tables, extra = run(scenario, out)
    whole = time.perf_counter() - start
    after_last_step = extra["startup"]["other_s"]
    return whole, extra["startup_s"] - after_last_step, tables.rounds.drop(columns="wall_s"), extra["actors_reused"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()

    from hsplit_actors.scenario import parse_scenario
    from hsplit_actors.training.run import connect, disconnect

    scenario = parse_scenario(yaml.safe_dump(SCENARIO | {"local_iterations": args.iterations}))
    connect(None)
    figures: dict[str, list[tuple[float, float]]] = {"new": [], "kept": []}
    with tempfile.TemporaryDirectory() as tmp:
        *_, reference, _ = one_run(scenario, Path(tmp) / "first", kept=False)
        for pair in range(args.pairs):
            for kind in (("new", "kept") if pair % 2 == 0 else ("kept", "new")):
                whole, before_step, rounds, reused = one_run(scenario, Path(tmp) / f"{kind}{pair}", kind == "kept")
                assert reused == (kind == "kept"), (kind, reused)
                pd.testing.assert_frame_equal(rounds, reference)  # the same tables either way
                figures[kind].append((whole, before_step))
                print(f"pair {pair + 1} {kind:4}  whole {whole:6.2f} s  before the first step {before_step:6.2f} s",
                      flush=True)
    disconnect()
    for index, what in ((1, "before the first step"), (0, "whole run call")):
        new = [f[index] for f in figures["new"]]
        kept = [f[index] for f in figures["kept"]]
        mean, half, _ = mean_ci(pd.Series([n - k for n, k in zip(new, kept, strict=True)]))
        print(f"{what}: median {statistics.median(new):.2f} s new, {statistics.median(kept):.2f} s kept; "
              f"paired difference {mean:.2f} ± {half:.2f} s (95% CI, {len(new)} pairs)")
    print("tables identical in every run")


if __name__ == "__main__":
    main()
