"""`hsplit plan` throughput per aggregation mode, side by side in one run (issue 10): client-iterations per wall
second on scenarios/fleet_10k.yaml (10k devices, availability 0.8), sync against async (FedBuff, C = 2000,
K = 500) and semi_sync (deadline at 60% of a sync round), the same number of client-iterations or close.

    python bench/plan_modes.py [--iterations 5]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from hsplit_actors.preparation import prepare
from hsplit_actors.scenario import load_scenario
from hsplit_actors.simulation import simulate

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "fleet_10k.yaml"


def measure(scenario) -> tuple[int, float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setup = prepare(scenario)
    start = time.perf_counter()
    tables, _, _ = simulate(scenario, setup)
    wall = time.perf_counter() - start
    return int((tables.events["phase"] == "client_bwd").sum()), wall, float(tables.rounds["round_s"].mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    base = load_scenario(SCENARIO)
    sync = base.model_copy(update={"rounds": 2, "local_iterations": args.iterations})
    agg = type(base.aggregation)
    its, wall, round_s = measure(sync)
    rows = [("sync", its, wall)]
    modes = {
        "async": agg.model_validate({"mode": "async", "concurrency": 2000, "buffer": 500, "aggregations": 32,
                                     "staleness": "polynomial"}),
        "semi_sync": agg.model_validate({"mode": "semi_sync", "deadline_s": 0.6 * round_s, "late": "carry"}),
    }
    for name, spec in modes.items():
        its_m, wall_m, _ = measure(sync.model_copy(update={"aggregation": spec}))
        rows.append((name, its_m, wall_m))
    print(f"{'mode':>10} {'client-its':>11} {'wall s':>7} {'client-it/s':>12} {'vs sync':>8}")
    for name, n, w in rows:
        print(f"{name:>10} {n:>11,} {w:>7.2f} {n / w:>12,.0f} {n / w / (its / wall):>8.2f}")


if __name__ == "__main__":
    main()
