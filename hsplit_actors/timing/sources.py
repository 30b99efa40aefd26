"""Where a device's compute durations come from: one object per source, behind one protocol. The engine and ARMSC
price every phase through `engine.durations.Durations`, which holds a source for the server and one per fleet
entry. Adding a source (a trace, say) is a class here, its case in `source_for`, and its schema field.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from hsplit_actors.costmodel import ClientConfig, IterationCost, ModelArch
from hsplit_actors.timing.profile import Profile, load_profile
from hsplit_actors.timing.roofline import Rates, seconds


class TimingSource(Protocol):
    """Seconds of one iteration's compute phases. `rates` are the device's own figures (the clients table's flops,
    mem_gbps, launch_us), for sources that use them."""

    def client(self, cost: IterationCost, config: ClientConfig, rates: Rates) -> tuple[float, float]:
        """(forward, backward) on the device."""

    def server(self, cost: IterationCost, config: ClientConfig, jobs: int) -> float:
        """The server part of `jobs` iterations of `config` run as one batch."""

    def describe(self) -> dict:
        """What meta.json records of it."""


class Roofline:
    """The default model (timing/roofline.py). The server's rates are fixed; a client's come with each call."""

    def __init__(self, server: Rates | None = None):
        self.rates = server

    def client(self, cost: IterationCost, config: ClientConfig, rates: Rates) -> tuple[float, float]:
        return (seconds(cost.client_fwd_flops, cost.client_fwd_bytes, cost.client_fwd_kernels, rates),
                seconds(cost.client_bwd_flops, cost.client_bwd_bytes, cost.client_bwd_kernels, rates))

    def server(self, cost: IterationCost, config: ClientConfig, jobs: int) -> float:
        """The jobs' FLOPs and activations add up; the weights are read and the kernels launched once a batch."""
        return seconds(jobs * cost.server_flops, cost.server_weight_bytes + jobs * cost.server_job_bytes,
                       cost.server_kernels, self.rates)

    def describe(self) -> dict:
        if self.rates is None:
            return {"kind": "roofline", "constants": "clients table: flops, mem_gbps, launch_us"}
        return {"kind": "roofline", "flops": self.rates.flops, "mem_gbps": self.rates.bytes_per_s / 1e9,
                "launch_us": self.rates.launch_s * 1e6}


class Measured:
    """A profile `hsplit calibrate` wrote, read at `threads` (None: its most)."""

    def __init__(self, profile: Profile, threads: int | None, arch: ModelArch, batch: int, seq: int):
        self.profile, self.threads, self.arch, self.batch, self.seq = profile, threads, arch, batch, seq

    def client(self, cost: IterationCost, config: ClientConfig, rates: Rates) -> tuple[float, float]:
        fwd, bwd, _ = self.profile.phases(self.arch, config, self.batch, self.seq, self.threads)
        return fwd, bwd

    def server(self, cost: IterationCost, config: ClientConfig, jobs: int) -> float:
        return self.profile.phases(self.arch, config, self.batch, self.seq, self.threads, jobs)[2]

    def describe(self) -> dict:
        machine = self.profile.meta.get("machine") or {}
        return {"kind": "profile", "file": self.profile.path,
                "sha256": hashlib.sha256(Path(self.profile.path).read_bytes()).hexdigest(),
                "threads": self.threads or self.profile.default_threads,
                "measured_on": machine.get("gpu") or machine.get("cpu")}


def source_for(ref, default: TimingSource, arch: ModelArch, batch: int, seq: int) -> TimingSource:
    """The source a scenario's `timing:` names (a profile file, or {file, threads}); `default` without one."""
    if ref is None:
        return default
    if isinstance(ref, str):
        return Measured(load_profile(ref), None, arch, batch, seq)
    return Measured(load_profile(ref.file), ref.threads, arch, batch, seq)
