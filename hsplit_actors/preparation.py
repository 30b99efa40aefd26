"""A scenario made into what a simulated run needs: the model's shape, the sampled fleet and the strategy with its
timing (`prepare`), refusing scenarios nobody can train in. Kept apart from the simulation and its tables: the
hosts of `hsplit run` receive a `Setup`, and this module brings them no pandas."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from hsplit_actors.costmodel import ModelArch
from hsplit_actors.costmodel.costs import ADAM_COPIES, ADAPTER_BYTES
from hsplit_actors.engine.durations import Durations, batching_in_effect, warn_batching
from hsplit_actors.engine.schedules import schedule_for
from hsplit_actors.errors import ScenarioError
from hsplit_actors.fleet import Fleet, build_fleet
from hsplit_actors.fleet.devices import load_catalogue, server_rates
from hsplit_actors.methods import ServerInfo, Strategy, make_strategy
from hsplit_actors.methods.base import GIB, SharedServerSet
from hsplit_actors.scenario.load import architecture
from hsplit_actors.scenario.schema import Scenario


class ServerMemoryWarning(UserWarning):
    """The server's per-GPU memory estimate exceeds its budget."""


class InfeasibleClientsWarning(UserWarning):
    """Some clients' budgets cannot hold the method's configuration; they are excluded (SPEC §5)."""


@dataclass
class Setup:
    arch: ModelArch
    fleet: Fleet
    strategy: Strategy
    server_memory_gb: float = 0.0  # per-GPU estimate for the first round's configuration


def prepare(scenario: Scenario) -> Setup:
    """Model shape, sampled fleet and strategy; rejects scenarios in which nobody can train."""
    arch = architecture(scenario)
    fleet = build_fleet(scenario)
    _, servers = load_catalogue()
    profile = servers[scenario.server.profile]
    rates = server_rates(scenario.server, scenario.model.dtype)
    server = ServerInfo(rates.flops, float(scenario.server.memory_gb or profile.memory_gb), scenario.server.gpus)
    strategy = make_strategy(scenario.method, arch, scenario.data.batch_size, scenario.data.seq_len,
                             scenario.model.dtype, scenario.seed, server)
    strategy.durations = Durations(scenario, arch, fleet.timing, rates)  # the engine's, and ARMSC's
    warn_batching(scenario, strategy)
    return Setup(arch, fleet, strategy, check_feasibility(scenario, fleet, strategy))


def check_feasibility(scenario: Scenario, fleet: Fleet, strategy: Strategy) -> float:
    """SPEC §8: a budget that no configuration fits is an error; SPEC §5: partly infeasible fleets warn.
    Returns the server's per-GPU memory estimate (checked against its budget here)."""
    method = scenario.method
    for name, override in getattr(method, "per_device", {}).items():
        if override.split_point is None and override.rank is None:
            continue
        members = fleet.device == name
        if not members.any():
            continue
        config = strategy.uniform(override.split_point or method.split_point or 1,
                                  override.rank if override.rank is not None else method.rank)
        need = strategy.cost(config).client_memory_bytes / GIB
        budget = fleet.memory_gb[members].min()
        if need > budget:
            raise ScenarioError(f"this configuration needs {need:.2f} GiB but {name} has {budget:.2f} GiB; "
                                "lower split_point or rank", field=f"method.per_device.{name}")
    assignment = strategy.configure(0, fleet)
    feasible = assignment.feasible
    if not feasible.any():
        smallest = min(strategy.cost(c).client_memory_bytes for c in assignment.configs) / GIB
        raise ScenarioError(
            f"no device's budget fits any {method.name} configuration (largest budget {fleet.memory_gb.max():.2f} "
            f"GiB, smallest configuration needs {smallest:.2f} GiB); raise memory_gb, lower data.batch_size / "
            "seq_len, or choose a split method", field="fleet[].memory_gb")
    problem = schedule_for(scenario.aggregation.mode).check(scenario.aggregation, int(feasible.sum()), method.name)
    if problem:
        raise ScenarioError(problem[0], field=problem[1])
    server_gb = check_server_memory(scenario, assignment, strategy)
    if not feasible.all():
        names, counts = np.unique(fleet.device[~feasible], return_counts=True)
        who = ", ".join(f"{n} x{c}" for n, c in zip(names, counts, strict=True))
        warnings.warn(f"{(~feasible).sum()} of {len(fleet)} clients ({who}) cannot hold {method.name}'s "
                      "configuration and are excluded (clients.feasible = false)", InfeasibleClientsWarning,
                      stacklevel=2)
    return server_gb


def server_memory_gb(scenario: Scenario, assignment, strategy: Strategy) -> float:
    """Per-GPU server memory: its frozen part (deepest of all clients' server parts), the server-side adapters
    with Adam state (one set per client in SFL-V1 style, one shared set otherwise; spread over the GPUs), and the
    activations of the largest job (or batch of jobs) running on it."""
    counts = np.bincount(assignment.index[assignment.feasible], minlength=len(assignment.configs))
    costs = [strategy.cost(c) for c in assignment.configs]
    used = [cost for cost, count in zip(costs, counts, strict=True) if count]
    if not used:
        return 0.0
    frozen = max(c.server_frozen_bytes for c in used)
    if strategy.capability(SharedServerSet):
        adapters = max(c.server_adapter_params for c in used)
    else:
        adapters = sum(c.server_adapter_params * int(n) for c, n in zip(costs, counts, strict=True))
    gpus = scenario.server.gpus
    jobs = scenario.server.batching.max_jobs if batching_in_effect(scenario, strategy) else 1  # a batch holds all
    per_gpu = frozen + adapters * ADAPTER_BYTES * ADAM_COPIES / gpus + jobs * max(c.server_activation_bytes
                                                                                   for c in used)
    return per_gpu / GIB


def check_server_memory(scenario: Scenario, assignment, strategy: Strategy) -> float:
    """Warn when the server's GPUs cannot hold what the method puts on them (the run still goes on)."""
    _, servers = load_catalogue()
    budget = scenario.server.memory_gb or servers[scenario.server.profile].memory_gb
    need = server_memory_gb(scenario, assignment, strategy)
    if need > budget:
        warnings.warn(f"the server needs about {need:.1f} GiB per GPU but has {budget:.1f} GiB "
                      "(server.memory_gb); use more GPUs, a shared server side (sfl variant v2), or lower ranks",
                      ServerMemoryWarning, stacklevel=3)
    return need
