"""`hsplit plan` on scenarios/fleet_10k.yaml with and without server batching: queue wait, round time, server
utilisation and jobs per batch, side by side in one run.

Two settings. (1) The scenario as shipped (GPT-2 medium, 8 H100s, FLOPs model): a batch costs exactly what its
jobs cost, so batching can only reorder the queue (and `max_wait_ms` can only add waiting). (2) The same fleet with
a measured server: GPT-2-small blocks timed on this project's CPU machine (profiles/gpt2-small-cpu.yaml; its grid
needs seq <= 64 and float32), where a batch saves the per-job launch and framework overhead the profile measured.

    python bench/batching_plan.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from hsplit_actors.preparation import prepare  # noqa: E402
from hsplit_actors.scenario import parse_scenario  # noqa: E402
from hsplit_actors.simulation import simulate  # noqa: E402
from hsplit_actors.summary import summarise  # noqa: E402

BATCHING = [None, {"max_jobs": 4}, {"max_jobs": 16}, {"max_jobs": 16, "max_wait_ms": 20}]


def measured_server(raw: dict) -> dict:
    """fleet_10k on GPT-2 small in float32 at seq 64, its 8 server GPUs timed by the CPU profile."""
    raw = raw | {"model": {"preset": "gpt2-small", "dtype": "float32"}}
    raw["data"] = raw["data"] | {"seq_len": 64}
    raw["server"] = raw["server"] | {"timing": str(REPO / "profiles" / "gpt2-small-cpu.yaml")}
    return raw


def plan_row(raw: dict, setting: str, batching: dict | None) -> dict:
    if batching is not None:
        raw = raw | {"server": raw["server"] | {"batching": batching}}
    scenario = parse_scenario(yaml.safe_dump(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setup = prepare(scenario)
    start = time.perf_counter()
    tables, _, extra = simulate(scenario, setup)
    wall = time.perf_counter() - start
    s = summarise(tables, extra)
    label = "none" if batching is None else ", ".join(f"{k} {v}" for k, v in batching.items())
    ev = tables.events
    server_s = (ev["t_end"] - ev["t_start"])[ev["phase"] == "server"].mean()
    return {"setting": setting, "batching": label, "queue_wait_mean_s": s["queue_wait_mean_s"],
            "queue+server_mean_s": s["queue_wait_mean_s"] + float(server_s),
            "round_s_mean": s["round_s_mean"], "server_utilisation_%": 100 * s["server_utilisation"],
            "jobs_per_batch": s["server_batch_mean"], "server_busy_s": extra["server_busy_s"], "plan_wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base = yaml.safe_load((REPO / "scenarios" / "fleet_10k.yaml").read_text()) | {"rounds": args.rounds,
                                                                                   "progress": False}
    rows = []
    for setting, raw in (("FLOPs model (as shipped)", base), ("measured server (CPU profile)", measured_server(base))):
        for batching in BATCHING:
            rows.append(plan_row(raw, setting, batching))
            print(rows[-1], flush=True)
    pd.set_option("display.width", 200)
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
