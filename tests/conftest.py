"""Shared helpers: small scenarios written to temporary files, offline hub settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Training fingerprints (tests/fingerprints.py) were recorded with AVX2 kernels; on an AVX-512 CPU, ATen and MKL
# pick other kernels whose float results differ in the last bits, so every recorded run would "change". Pinned
# to AVX2 before torch is imported, for this process and the processes it starts (Ray workers inherit it). The
# CPU's vendor still moves the losses' last bits: those are compared to a tolerance (fingerprints.COMPUTED).
for _name, _isa in (("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_ENABLE_INSTRUCTIONS", "AVX2"),
                    ("ONEDNN_MAX_CPU_ISA", "AVX2")):
    os.environ.setdefault(_name, _isa)

REPO = Path(__file__).resolve().parents[1]
ENV_OFFLINE = dict(os.environ, HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled")  # for commands the tests start

SMALL_GPT2 = {"preset": "gpt2-small", "overrides": {"n_layer": 4, "n_embd": 128, "n_head": 4}}


def small_scenario(**changes) -> dict:
    """A 6-device, 2-round scenario on a 4-block GPT-2; keyword arguments replace top-level sections."""
    base = {
        "name": "t",
        "seed": 1,
        "model": dict(SMALL_GPT2),
        "data": {"dataset": "synthetic", "batch_size": 4, "seq_len": 32},
        "fleet": [
            {"profile": "jetson_nano", "count": 2},
            {"profile": "orin_nano", "count": 2},
            {"profile": "phone_sd8gen2", "count": 2, "uplink_mbps": {"lognormal": {"median": 12, "sigma": 0.5}}},
        ],
        "server": {"profile": "a100_40gb", "gpus": 1},
        "method": {"name": "sfl", "split_point": 2, "rank": 4},
        "rounds": 2,
        "local_iterations": 3,
        "progress": False,
    }
    base.update(changes)
    return base


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (workers importing torch are slow to start), started as
    a run starts its own: without the daemons a run never uses."""
    import ray

    from hsplit_actors.training.local_ray import lean_start

    with lean_start():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def tiny_training_scenario(**changes) -> dict:
    """Real training on a small random BERT over SST-2: 4 clients, 2 rounds, seconds per run."""
    base = {
        "name": "train", "seed": 3,
        "model": {"preset": "minilm-l6", "weights": "random",
                  "overrides": {"num_hidden_layers": 3, "hidden_size": 64, "intermediate_size": 128,
                                "num_attention_heads": 4}},
        "data": {"dataset": "sst2", "batch_size": 8, "seq_len": 24, "samples_per_client": 48,
                 "partition": {"kind": "dirichlet", "alpha": 0.5}},
        "fleet": [{"profile": "jetson_nano", "count": 2}, {"profile": "agx_orin", "count": 2}],
        "method": {"name": "sfl", "split_point": 1, "rank": 4, "targets": ["query", "value"]},
        "rounds": 2, "local_iterations": 3, "progress": False,
        "train": {"eval_samples": 64, "lr": 0.01},
    }
    base.update(changes)
    return base


@pytest.fixture
def write_scenario(tmp_path: Path):
    """Write a scenario dict (or raw text) to a file and return its path."""

    def write(content: dict | str, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


def run_scenario(raw: dict, out: Path, **train):
    """Train a scenario dict (with `train:` changes) into `out`: `hsplit run` without the CLI."""
    import warnings

    from hsplit_actors.scenario import parse_scenario
    from hsplit_actors.training.run import run

    scenario = parse_scenario(yaml.safe_dump(raw | {"train": raw.get("train", {}) | train}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exclusions and data shares are asserted where they matter
        return run(scenario, out)


def sampled_fleet(groups: list[dict], seed: int = 0, **extra):
    """The fleet `plan` would sample from these fleet entries (on small_scenario's other settings)."""
    from hsplit_actors.fleet import build_fleet
    from hsplit_actors.scenario import parse_scenario

    return build_fleet(parse_scenario(yaml.safe_dump(small_scenario(fleet=groups, seed=seed, **extra))))


def explicit_fleet(memory_gb, flops, up: float = 100.0):
    """A fleet given column by column: device i has memory_gb[i], flops[i], `up` Mbit/s up and twice that down."""
    from hsplit_actors.fleet import Fleet

    n = len(memory_gb)
    return Fleet.explicit([f"d{i}" for i in range(n)], flops=list(flops), memory_gb=list(memory_gb),
                          uplink_mbps=[up] * n, downlink_mbps=[2 * up] * n)
