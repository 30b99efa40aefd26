"""How long an iteration's compute phases take: from a measured profile (`hsplit calibrate`) where the scenario
names one for the server or a fleet entry, else the default roofline-plus-overhead model (timing/roofline.py).
Transfers stay bytes / bandwidth + latency either way (engine/sim.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

from hsplit_actors.costmodel import ClientConfig, IterationCost, ModelArch
from hsplit_actors.timing.profile import Profile, load_profile, warn_beyond
from hsplit_actors.timing.roofline import Rates, seconds


class BatchingIgnored(UserWarning):
    """`server.batching` asked of a method whose clients each have their own server-side adapters."""


def _resolve(ref) -> tuple[Profile, int | None] | None:
    if ref is None:
        return None
    if isinstance(ref, str):
        return load_profile(ref), None
    return load_profile(ref.file), ref.threads


class Durations:
    """Compute durations for the engine. Profiles are read once; predictions are cached per configuration."""

    def __init__(self, scenario, arch: ModelArch, group_timing: list, server: Rates):
        self.arch, self.batch, self.seq = arch, scenario.data.batch_size, scenario.data.seq_len
        self.server_rates = server
        self.server_profile = _resolve(scenario.server.timing)
        self.group_profile = [_resolve(ref) for ref in group_timing]
        self.measured_clients = any(p is not None for p in self.group_profile)

    def describe(self) -> dict:
        """The timing source of the server and of each fleet entry, for meta.json: a profile (file and sha256) or
        the default model (the server's constants here; each device's in the clients table)."""
        def profile(measured) -> dict:
            import hashlib

            prof, threads = measured
            digest = hashlib.sha256(Path(prof.path).read_bytes()).hexdigest()
            machine = prof.meta.get("machine") or {}
            return {"kind": "profile", "file": prof.path, "sha256": digest, "threads": threads or prof.default_threads,
                    "measured_on": machine.get("gpu") or machine.get("cpu")}

        rates = self.server_rates
        server = profile(self.server_profile) if self.server_profile else {
            "kind": "roofline", "flops": rates.flops, "mem_gbps": rates.bytes_per_s / 1e9,
            "launch_us": rates.launch_s * 1e6}
        clients = [profile(p) if p else {"kind": "roofline", "constants": "clients table: flops, mem_gbps, launch_us"}
                   for p in self.group_profile]
        return {"server": server, "fleet_entries": clients}

    def client(self, cost: IterationCost, config: ClientConfig, group: int | None, rates: Rates) -> tuple[float, float]:
        """(forward, backward) seconds of one iteration on a device of fleet entry `group` (None: no entry has a
        profile) with `rates`: its entry's profile where it has one, else the default model."""
        measured = self.group_profile[group] if group is not None and self.measured_clients else None
        if measured is None:
            return (seconds(cost.client_fwd_flops, cost.client_fwd_bytes, cost.client_fwd_kernels, rates),
                    seconds(cost.client_bwd_flops, cost.client_bwd_bytes, cost.client_bwd_kernels, rates))
        profile, threads = measured
        fwd, bwd, _ = profile.phases(self.arch, config, self.batch, self.seq, threads)
        return fwd, bwd

    def server(self, cost: IterationCost, config: ClientConfig, jobs: int = 1) -> float:
        """Seconds of the server part of `jobs` iterations of `config` run as one batch (1: unbatched): the jobs'
        FLOPs and activations add up, the weights are read and the kernels launched once per batch."""
        if self.server_profile is None:
            return seconds(jobs * cost.server_flops, cost.server_weight_bytes + jobs * cost.server_job_bytes,
                           cost.server_kernels, self.server_rates)
        profile, threads = self.server_profile
        return profile.phases(self.arch, config, self.batch, self.seq, threads, jobs)[2]


def batching_in_effect(scenario, strategy) -> bool:
    """Whether the server batches: asked for, and the method has one shared server-side set (SplitLoRA, SFL-V2,
    HSplitLoRA, CenLoRA). SFL-V1's per-client server adapters stay unbatched (`warn_batching` says so)."""
    return scenario.server.batching is not None and strategy.shared_server


def warn_batching(scenario, strategy) -> None:
    """Before a run: batching asked of a method that cannot batch, or batches above a server profile's grid."""
    spec = scenario.server.batching
    if spec is None:
        return
    if not strategy.shared_server:
        warnings.warn(f"server.batching is ignored: {scenario.method.name} keeps one server-side adapter set per "
                      "client, so no two clients' jobs share one (batching needs a shared server side, e.g. sfl "
                      "variant v2)", BatchingIgnored, stacklevel=2)
        return
    measured = _resolve(scenario.server.timing)
    if measured is not None and spec.max_jobs > 1:
        warn_beyond(measured[0], spec.max_jobs * scenario.data.batch_size)
