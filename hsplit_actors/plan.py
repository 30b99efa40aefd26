"""`hsplit plan`: a timing-only simulation of a scenario (no weights, no training) into a run directory."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsplit_actors.costmodel import ModelArch
from hsplit_actors.engine import Executor, Simulation
from hsplit_actors.errors import ScenarioError
from hsplit_actors.fleet import Fleet, build_fleet
from hsplit_actors.methods import Strategy, make_strategy
from hsplit_actors.methods.base import GIB
from hsplit_actors.runs import RunTables, new_run_dir, timer, write_run
from hsplit_actors.scenario.load import architecture
from hsplit_actors.scenario.schema import Scenario
from hsplit_actors.tables import clients_table, events_table, rounds_table


class InfeasibleClientsWarning(UserWarning):
    """Some clients' budgets cannot hold the method's configuration; they are excluded (SPEC §5)."""


@dataclass
class Setup:
    arch: ModelArch
    fleet: Fleet
    strategy: Strategy


def prepare(scenario: Scenario) -> Setup:
    """Model shape, sampled fleet and strategy; rejects scenarios in which nobody can train."""
    arch = architecture(scenario)
    fleet = build_fleet(scenario)
    strategy = make_strategy(scenario.method, arch, scenario.data.batch_size, scenario.data.seq_len,
                             scenario.model.dtype)
    check_feasibility(scenario, fleet, strategy)
    return Setup(arch, fleet, strategy)


def check_feasibility(scenario: Scenario, fleet: Fleet, strategy: Strategy) -> None:
    """SPEC §8: a budget that no configuration fits is an error; SPEC §5: partly infeasible fleets warn."""
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
    if not feasible.all():
        names, counts = np.unique(fleet.device[~feasible], return_counts=True)
        who = ", ".join(f"{n} x{c}" for n, c in zip(names, counts, strict=True))
        warnings.warn(f"{(~feasible).sum()} of {len(fleet)} clients ({who}) cannot hold {method.name}'s "
                      "configuration and are excluded (clients.feasible = false)", InfeasibleClientsWarning,
                      stacklevel=2)


def simulate(scenario: Scenario, setup: Setup, executor: Executor | None = None,
             on_progress: Callable[[int, int, float], None] | None = None) -> tuple[RunTables, float, dict]:
    """Run the engine and build the tables."""
    start = timer()
    sim = Simulation(scenario, setup.arch, setup.fleet, setup.strategy, executor, on_progress)
    log = sim.run()
    events = events_table(log, scenario.name, scenario.method.name)
    rounds = rounds_table(log)
    samples = np.full(len(setup.fleet), scenario.data.samples_per_client, dtype=np.int64)
    clients = clients_table(log, setup.fleet, setup.arch, samples)
    extra = {"server_busy_s": log.server_busy_s, "server_gpus": log.gpus, "n_clients": len(setup.fleet)}
    return RunTables(events, rounds, clients), timer() - start, extra


def plan(scenario: Scenario, out: str | Path | None = None,
         on_progress: Callable[[int, int, float], None] | None = None) -> tuple[Path, RunTables, dict]:
    """Simulate and write the run directory; returns (directory, tables, meta extras)."""
    setup = prepare(scenario)
    directory = new_run_dir(scenario, "plan", str(out) if out else None)
    tables, wall_s, extra = simulate(scenario, setup, on_progress=on_progress)
    write_run(directory, scenario, tables, "plan", wall_s, extra)
    return directory, tables, extra
