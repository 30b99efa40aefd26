"""How long an iteration's compute phases take: from a measured profile (`hsplit calibrate`) where the scenario
names one for the server or a fleet entry, else the default roofline-plus-overhead model (timing/roofline.py).
Transfers stay bytes / bandwidth + latency either way (engine/sim.py)."""

from __future__ import annotations

import warnings

from hsplit_actors.costmodel import ClientConfig, IterationCost, ModelArch
from hsplit_actors.methods.base import SharedServerSet
from hsplit_actors.timing.profile import load_profile, warn_beyond
from hsplit_actors.timing.roofline import Rates
from hsplit_actors.timing.sources import Roofline, source_for


class BatchingIgnored(UserWarning):
    """`server.batching` asked of a method whose clients each have their own server-side adapters."""


class Durations:
    """The engine's (and ARMSC's) compute durations: a timing source for the server and one per fleet entry
    (timing/sources.py); profiles are read once."""

    def __init__(self, scenario, arch: ModelArch, group_timing: list, server: Rates):
        self.server_rates = server
        size = (arch, scenario.data.batch_size, scenario.data.seq_len)
        self.server_source = source_for(scenario.server.timing, Roofline(server), *size)
        self.group_sources = [source_for(ref, DEVICE_DEFAULT, *size) for ref in group_timing]
        self.measured_clients = any(src is not DEVICE_DEFAULT for src in self.group_sources)

    def describe(self) -> dict:
        """The timing source of the server and of each fleet entry, for meta.json: a profile (file and sha256) or
        the default model (the server's constants here; each device's in the clients table)."""
        return {"server": self.server_source.describe(),
                "fleet_entries": [src.describe() for src in self.group_sources]}

    def client(self, cost: IterationCost, config: ClientConfig, group: int | None, rates: Rates) -> tuple[float, float]:
        """(forward, backward) seconds of one iteration on a device of fleet entry `group` (None: no entry has a
        profile) with `rates`: its entry's source."""
        source = self.group_sources[group] if group is not None and self.measured_clients else DEVICE_DEFAULT
        return source.client(cost, config, rates)

    def server(self, cost: IterationCost, config: ClientConfig, jobs: int = 1) -> float:
        """Seconds of the server part of `jobs` iterations of `config` run as one batch (1: unbatched)."""
        return self.server_source.server(cost, config, jobs)


DEVICE_DEFAULT = Roofline()  # a device without a profile: the default model with its own rates


def batching_in_effect(scenario, strategy) -> bool:
    """Whether the server batches: asked for, and the method has one shared server-side set (SplitLoRA, SFL-V2,
    HSplitLoRA, CenLoRA). SFL-V1's per-client server adapters stay unbatched (`warn_batching` says so)."""
    return scenario.server.batching is not None and strategy.capability(SharedServerSet) is not None


def warn_batching(scenario, strategy) -> None:
    """Before a run: batching asked of a method that cannot batch, or batches above a server profile's grid."""
    spec = scenario.server.batching
    if spec is None:
        return
    if strategy.capability(SharedServerSet) is None:
        warnings.warn(f"server.batching is ignored: {scenario.method.name} keeps one server-side adapter set per "
                      "client, so no two clients' jobs share one (batching needs a shared server side, e.g. sfl "
                      "variant v2)", BatchingIgnored, stacklevel=2)
        return
    ref = scenario.server.timing
    if ref is not None and spec.max_jobs > 1:
        warn_beyond(load_profile(ref if isinstance(ref, str) else ref.file), spec.max_jobs * scenario.data.batch_size)
