"""ARMSC's cost on a large fleet: one `configure` (split point and ranks for every device) of HSplitLoRA on
scenarios/paper_fleet_1000.yaml's devices (LLaMA-2-7B, budgets uniform in 5-20 GB), for N devices.

    python bench/armsc_configure.py [--devices 100,1000]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from hsplit_actors.preparation import prepare
from hsplit_actors.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "paper_fleet_1000.yaml"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", default="100,1000")
    args = parser.parse_args()
    base = load_scenario(SCENARIO)
    print(f"{'devices':>8} {'configure s':>12} {'distinct configurations':>24}")
    for n in (int(x) for x in args.devices.split(",")):
        scenario = base.model_copy(update={"fleet": [base.fleet[0].model_copy(update={"count": n})]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            setup = prepare(scenario)  # builds the fleet and runs ARMSC once (the feasibility check)
            wall = time.perf_counter() - start
        configs = len(setup.strategy.configure(0, setup.fleet).configs)
        print(f"{n:>8} {wall:>12.2f} {configs:>24}")


if __name__ == "__main__":
    main()
