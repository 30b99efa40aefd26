"""Recorded fingerprints of small training runs: a change that must not alter results (a new default-off
setting, a refactoring) is checked against tables recorded before it. `python -m tests.fingerprints` re-records
(only when a change is *meant* to alter results; say so in the commit)."""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.conftest import run_scenario, tiny_training_scenario

FILE = Path(__file__).with_name("data") / "fingerprints.json"

# HetLoRA / FLoRA budgets that give two different ranks; the MIXED fleet of test_run_methods mixes split points
_TWO_RANKS = [{"profile": "jetson_nano", "count": 2, "memory_gb": 0.00993}, {"profile": "agx_orin", "count": 2}]
_MIXED = {
    "profiles": {"slow_cpu": {"flops": 1e8, "memory_gb": 4, "uplink_mbps": 1000, "downlink_mbps": 1000},
                 "slow_link": {"flops": 1e13, "memory_gb": 4, "uplink_mbps": 1, "downlink_mbps": 1}},
    "fleet": [{"profile": "slow_cpu", "count": 2}, {"profile": "slow_link", "count": 2}],
}

CASES: dict[str, dict] = {
    "sfl_v1": {"method": {"name": "sfl", "split_point": 1, "rank": 4}},
    "splitlora": {"method": {"name": "splitlora", "rank": 4, "split_point": 2}},
    "fedit": {"method": {"name": "fedit", "rank": 4}},
    "hetlora": {"method": {"name": "hetlora", "ranks": [2, 4, 8]}, "fleet": _TWO_RANKS},
    "flora": {"method": {"name": "flora", "ranks": [2, 4, 8]}, "fleet": _TWO_RANKS},
    "cenlora": {"method": {"name": "cenlora", "rank": 4}},
    "hsplitlora": {**_MIXED, "method": {"name": "hsplitlora", "ranks": [0, 2, 4], "allow_federated": True,
                                        "max_client_share": 1.0}},
    "hsplitlora_async": {**_MIXED, "method": {"name": "hsplitlora", "ranks": [0, 2, 4], "max_client_share": 1.0},
                         "aggregation": {"mode": "async", "concurrency": 3, "buffer": 2, "aggregations": 3,
                                         "staleness": "polynomial"}},
    "splitlora_semi_sync": {**_MIXED, "method": {"name": "splitlora", "rank": 4, "split_point": 1},
                            "aggregation": {"mode": "semi_sync", "min_updates": 3, "late": "carry"}},
}
SCENARIOS = Path(__file__).parents[1] / "scenarios"
PLANS = sorted(p.stem for p in SCENARIOS.glob("*.yaml"))  # every shipped scenario's `plan` tables


def scenario(case: str) -> dict:
    return tiny_training_scenario(**CASES[case], rounds=2, train={"eval_samples": 32, "lr": 0.01, "local": True})


def fingerprint(tables, leave_out: tuple[str, ...] = ()) -> str:
    """A digest of every number and label in events, rounds (less wall time, and the columns added after the
    fingerprints were recorded: `queue_wait_s`, tested on its own) and clients; less the rounds columns named."""
    digest = hashlib.sha256()
    rounds = tables.rounds.drop(columns=["wall_s", "queue_wait_s", *leave_out], errors="ignore")
    for frame in (tables.events, rounds, tables.clients):
        for name in frame.columns:
            digest.update(name.encode())
            values = frame[name].to_numpy()
            digest.update(values.astype(np.float64).tobytes() if values.dtype.kind in "fiub"
                          else "\x1f".join(map(str, values)).encode())
    return digest.hexdigest()


# What the model computed: the last bits of these differ between CPUs (MKL and oneDNN pick kernels by vendor as well
# as by instruction set: runs recorded on an AMD CPU came out otherwise on an Intel one, both held to AVX2), so a
# recorded run keeps them as values, compared to a relative 1e-5; everything else is compared to the bit. Checked
# both ways: the runs recorded on an Intel Xeon, measured on an AMD EPYC, give the same digests and computed values
# within 1.3e-7 relative (2026-12-02).
COMPUTED = ("train_loss", "eval_loss", "eval_metric")


def recorded_form(tables) -> dict:
    """How a training run is recorded: the digest of everything but COMPUTED, and COMPUTED's values."""
    return {"digest": fingerprint(tables, COMPUTED),
            "computed": {name: tables.rounds[name].astype(float).tolist() for name in COMPUTED}}


def assert_same_run(measured: dict, recorded: dict) -> None:
    import pytest

    assert measured["digest"] == recorded["digest"]
    for name in COMPUTED:
        assert measured["computed"][name] == pytest.approx(recorded["computed"][name], rel=1e-5, nan_ok=True), name


def measure(case: str, out: Path, **train) -> dict:
    _, tables, _ = run_scenario(scenario(case), out, **train)
    return recorded_form(tables)


def measure_plan(name: str, out: Path) -> str:
    import warnings

    from hsplit_actors.api import plan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infeasible clients and the like: the tables are what is compared
        return fingerprint(plan(SCENARIOS / f"{name}.yaml", out).tables)


def recorded() -> dict[str, str]:
    return json.loads(FILE.read_text())


if __name__ == "__main__":
    cases = sys.argv[1:] or list(CASES) + [f"plan:{name}" for name in PLANS]
    prints = recorded() if FILE.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            out = Path(tmp) / case.replace(":", "_")
            prints[case] = measure_plan(case[5:], out) if case.startswith("plan:") else measure(case, out)
            print(case, prints[case])
    FILE.parent.mkdir(exist_ok=True)
    FILE.write_text(json.dumps(prints, indent=1, sort_keys=True) + "\n")
