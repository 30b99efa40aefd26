"""How long an iteration's compute phases take: from a measured profile (`hsplit calibrate`) where the scenario
names one for the server or a fleet entry, else FLOPs / sustained FLOP/s (SPEC §2). Transfers stay bytes /
bandwidth + latency either way (engine/sim.py)."""

from __future__ import annotations

import warnings

from hsplit_actors.costmodel import ClientConfig, IterationCost, ModelArch
from hsplit_actors.timing.profile import Profile, load_profile, warn_beyond


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

    def __init__(self, scenario, arch: ModelArch, group_timing: list, server_flops: float):
        self.arch, self.batch, self.seq = arch, scenario.data.batch_size, scenario.data.seq_len
        self.server_flops = server_flops
        self.server_profile = _resolve(scenario.server.timing)
        self.group_profile = [_resolve(ref) for ref in group_timing]
        self.measured_clients = any(p is not None for p in self.group_profile)

    def client(self, cost: IterationCost, config: ClientConfig, group: int, flops: float) -> tuple[float, float]:
        """(forward, backward) seconds of one iteration on a device of fleet entry `group`."""
        measured = self.group_profile[group] if self.measured_clients else None
        if measured is None:
            return cost.client_fwd_flops / flops, cost.client_bwd_flops / flops
        profile, threads = measured
        fwd, bwd, _ = profile.phases(self.arch, config, self.batch, self.seq, threads)
        return fwd, bwd

    def server(self, cost: IterationCost, config: ClientConfig, jobs: int = 1) -> float:
        """Seconds of the server part of `jobs` iterations of `config` run as one batch (1: unbatched)."""
        if self.server_profile is None:  # FLOPs are additive: a batch costs what its jobs cost
            return jobs * cost.server_flops / self.server_flops
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
