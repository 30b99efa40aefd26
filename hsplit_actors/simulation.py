"""A prepared scenario (`preparation.py`) simulated: the engine driven by an executor into the tables, what `plan`
and `run` share. `planning.py` (the `plan` command) and `training/` both build on it."""

from __future__ import annotations

import numpy as np

from hsplit_actors.engine import Executor, ProgressCallback, Simulation
from hsplit_actors.preparation import Setup
from hsplit_actors.runs import RunTables, timer
from hsplit_actors.scenario.schema import Scenario
from hsplit_actors.tables import EventRows, clients_table, log_arrays, rounds_table
from hsplit_actors.timeline import from_log


def simulate(scenario: Scenario, setup: Setup, executor: Executor | None = None,
             on_progress: ProgressCallback | None = None) -> tuple[RunTables, float, dict]:
    """Run the engine and build the tables."""
    start = timer()
    sim = Simulation(scenario, setup.arch, setup.fleet, setup.strategy, executor, on_progress)
    log = sim.run()
    events = EventRows(log, scenario.name, scenario.method.name, scenario.events)  # built as it is written
    timeline = from_log(log, *log_arrays(log))
    rounds = rounds_table(log)
    samples = np.full(len(setup.fleet), scenario.data.samples_per_client, dtype=np.int64)
    clients = clients_table(log, setup.fleet, setup.arch, samples)
    extra = {"server_busy_s": log.server_busy_s, "server_gpus": log.gpus, "n_clients": len(setup.fleet),
             "server_memory_gb_estimate": setup.server_memory_gb, "aggregation": scenario.aggregation.mode,
             "peak_live_versions": log.peak_live_versions, "server_batches": log.server_batches,
             "timing": sim.durations.describe(), "server_profile": scenario.server.profile,
             "events": scenario.events, "phases": timeline.meta(),
             "virtual_end_s": sim.env.now}  # the last aggregation's end, or `until_s` where async stopped there
    return RunTables(events, rounds, clients, timeline=timeline), timer() - start, extra
