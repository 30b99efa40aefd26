"""What a scenario will cost before anything is built: client-iterations, events, the tables' peak memory and,
for `run`, the training steps. `validate`, `plan` and `run` print it; a scenario whose tables would not fit in
this machine's memory is refused with the figure and a way out, before the fleet is even sampled (a fleet of
10^12 devices, or `rounds: 1e9`, would otherwise allocate until the machine gives up)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hsplit_actors.errors import ScenarioError
from hsplit_actors.scenario.schema import Scenario, Windows

# Peak memory of `hsplit plan` (peak RSS) per client-iteration, by the events table's resolution: the log's 112
# bytes and the engine's state, plus at `phase` and `iteration` the table's sort order and the row group being
# written (tables are streamed to Parquet). Measured on bench/plan_throughput.py's scenario, 10k devices x 20
# rounds x 10 iterations: 0.69 / 0.90 / 1.55 GB at none / iteration / phase, i.e. ~230 / 345 / 700 bytes per
# client-iteration; 200k devices x 1 round: 0.89 / 1.04 / 1.68 GB. Devices: 10k and 200k devices x 1 iteration
# gave 0.20 and 1.01 GB: ~4.6 KB per device (fleet columns, clients table, and each live session's state: its
# generators and, queued for the server, its parked end event; a sync round has every participant live at once).
# Rounded up. Checked at 1M devices x 10 iterations, sync, `none`: 5.66 GB measured, 7.7 GB estimated; since
# split sessions under FIFO are callbacks rather than generators (engine/chained.py), 4.08 GB: an upper bound.
BYTES_PER_CLIENT_ITERATION = {"phase": 800, "iteration": 400, "none": 300}
BYTES_PER_DEVICE = 5_000
BASE_BYTES = 250 * 2**20  # the interpreter with numpy, pandas and simpy loaded
# rows per client iteration: client forward, uplink, queue, server, downlink, client backward (SPEC §1), or one
EVENTS_PER_ITERATION = {"phase": 6, "iteration": 1, "none": 0}
EVENTS_PER_SESSION = {"phase": 3, "iteration": 3, "none": 0}  # download, upload, aggregation share


@dataclass(frozen=True)
class Workload:
    devices: int
    sessions: int | None  # client sessions (a round's or an async slot's work); None: bounded by time only
    client_iterations: int | None
    events: int | None
    peak_bytes: int  # of the tables and the engine (`run` adds the model on top)

    def line(self, training: bool = False) -> str:
        """One line for the terminal."""
        if self.client_iterations is None:
            work = "client-iterations bounded by aggregation.until_s only"
        else:
            work = f"{self.client_iterations:,} client-iterations, ~{self.events:,} events"
        steps = f"; run: {self.client_iterations:,} training steps" if training and self.client_iterations else ""
        return f"estimate: {self.devices:,} devices, {work}, tables ~{_size(self.peak_bytes)} peak{steps}"


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1024 or unit == "PB":
            return f"{nbytes:,.0f} {unit}" if unit in ("B", "KB") else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def estimate(scenario: Scenario) -> Workload:
    """An upper estimate from the scenario alone (no fleet is sampled): every available device takes part in
    every round (sync and semi_sync; its expected share with a participation probability), async runs
    `aggregations x buffer` sessions plus those in flight at the end."""
    devices = sum(g.count for g in scenario.fleet)
    expected = sum(g.count * (1.0 if isinstance(g.availability, Windows) else g.availability)
                   for g in scenario.fleet)
    from hsplit_actors.engine.schedules import schedule_for

    sessions = schedule_for(scenario.aggregation.mode).sessions(scenario, round(expected))
    iterations = None if sessions is None else sessions * scenario.local_iterations
    rows = scenario.events
    events = None if sessions is None else iterations * EVENTS_PER_ITERATION[rows] + sessions * EVENTS_PER_SESSION[rows]
    peak = BASE_BYTES + devices * BYTES_PER_DEVICE + (iterations or 0) * BYTES_PER_CLIENT_ITERATION[rows]
    return Workload(devices, sessions, iterations, events, peak)


def _coarser(scenario: Scenario) -> str:
    """A way out that keeps the run whole: a coarser events table, if it would fit in less."""
    return {"phase": "write fewer events rows (events: iteration or none), or ",
            "iteration": "write no events rows (events: none), or "}.get(scenario.events, "")


def available_memory() -> int:
    """Bytes this machine can still give (MemAvailable), or its physical memory where /proc is not there."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check(scenario: Scenario, source: str | None = None, *, memory: int | None = None) -> Workload:
    """The estimate, or ScenarioError when its peak exceeds the memory available (`memory` for tests)."""
    work = estimate(scenario)
    memory = available_memory() if memory is None else memory
    if work.peak_bytes > memory:
        what = (f"{work.client_iterations:,} client-iterations" if work.client_iterations is not None
                else f"{work.devices:,} devices")
        raise ScenarioError(
            f"this scenario's tables would need about {_size(work.peak_bytes)} ({what} of {work.devices:,} devices) "
            f"and this machine has {_size(memory)} available; {_coarser(scenario)}lower rounds, local_iterations, "
            "aggregation.aggregations or the fleet's counts", source=source)
    return work
