"""Where the time of RESULTS.md §6's rounds goes, by `hsplit plan` (no training): each method of the paper-regime
scenario, and HSplitLoRA's own default split rule, with the devices' compute as given and 10x / 100x faster.
Prints the mean round, the split points and the per-phase link/compute seconds (and MB) summed over the run.

    python analysis/paper_regime_phases.py
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

import yaml

from hsplit_actors.api import plan

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "paper_regime_minilm_sst2.yaml"
METHODS = {
    "hsplitlora (budget rule, as run)": {"name": "hsplitlora", "split_objective": "budget", "max_client_share": 1.0},
    "hsplitlora (default latency rule)": {"name": "hsplitlora"},
    "splitlora": {"name": "splitlora", "rank": 4},
    "cenlora": {"name": "cenlora", "rank": 4},
}


def main() -> None:
    base = yaml.safe_load(SCENARIO.read_text())
    del base["compare"]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for scale in (1, 10, 100):
            for label, method in METHODS.items():
                raw = copy.deepcopy(base) | {"method": method}
                for device in raw["profiles"].values():
                    device["flops"] = float(device["flops"]) * scale
                run = plan(raw, Path(tmp) / f"{scale}-{len(label)}-{method['name']}")
                events = run.events.assign(seconds=run.events.t_end - run.events.t_start)
                phases = events.groupby("phase").agg(s=("seconds", "sum"), mb=("bytes", "sum"))
                rounds = run.rounds
                print(f"compute x{scale:<3} {label:36s} round {rounds.t_end.iloc[-1] / len(rounds):.3f} s, splits "
                      f"{run.clients.split_point.tolist()}: " + ", ".join(
                          f"{p} {r.s:.1f} s / {r.mb / 1e6:.0f} MB" for p, r in phases.iterrows()))


if __name__ == "__main__":
    main()
