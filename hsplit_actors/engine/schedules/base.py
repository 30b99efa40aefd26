"""What every aggregation mode shares, and the narrow interface through which it drives the simulation.

A mode is one `Schedule` subclass in one file, registered under its name with `@register("name")`, plus its
schema entry (`scenario.schema.AGGREGATION_KEYS`: the settings it takes). It draws clients, starts their
sessions, reads what they upload and decides when to aggregate; it reaches the simulation only through
`Engine` below, so it never touches the clock's bookkeeping, the executor or the log.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from typing import Any, ClassVar, Protocol

import numpy as np
import simpy

from hsplit_actors.engine.session import Session


class Engine(Protocol):
    """What a schedule may ask of the simulation (`Simulation` implements it)."""

    env: simpy.Environment
    scenario: Any  # the Scenario (its `aggregation` spec, rounds, seed)
    fleet: Any  # the sampled Fleet (participation, availability)
    version: int  # global versions published so far
    feasible: np.ndarray  # per client: the current configuration admits it
    running: dict[int, Session]  # sessions in flight, by id
    uploads: simpy.Store  # every session ends here: an update, or a session that ended without one
    finished: simpy.Event  # succeed it to end the run

    def participants(self, rnd: int) -> np.ndarray: ...
    def online(self, client: int) -> bool: ...
    def start_session(self, client: int, rnd: int, uploads: bool) -> Session: ...
    def aggregate(self, rnd: int, updates: list[Session]) -> Generator[Any, Any, dict]: ...
    def discard(self, s: Session) -> None: ...
    def assign_round(self, s: Session, index: int) -> None: ...
    def record_round(self, row: dict, metrics: dict) -> None: ...
    def begin_progress(self, participants: int) -> None: ...


# The columns every mode's rows have (`Schedule.close`), with their types: a run that ends before its first
# aggregation (async `until_s`) still has a rounds table, an empty one.
ROUND_COLUMNS = {"round": "int64", "version": "int64", "t_start": "float64", "t_end": "float64",
                 "wall_s": "float64", "participants": "int64", "infeasible": "int64", "aggregated": "bool",
                 "updates": "int64", "staleness_mean": "float64", "staleness_max": "int64"}

SCHEDULES: dict[str, type[Schedule]] = {}


def register(mode: str):
    """Class decorator: the schedule that runs `aggregation.mode: <mode>`."""
    def add(cls: type[Schedule]) -> type[Schedule]:
        cls.mode = mode
        SCHEDULES[mode] = cls
        return cls
    return add


def schedule_for(mode: str) -> type[Schedule]:
    return SCHEDULES[mode]


class Schedule:
    """Closing a round (or filling a buffer) with an aggregation and its row. Class-level answers let the
    tables, the workload estimate and `plan` ask about a mode without a simulation."""

    mode: ClassVar[str] = ""
    label: ClassVar[str] = "round"  # what the rounds table's rows are: rounds, or aggregations
    is_async: ClassVar[bool] = False  # sessions have no round of their own (traffic is attributed by time)
    stops_sessions: bool = True  # may stop a session between iterations (deadlines, staleness); per run
    until_s: float | None = None

    def __init__(self, engine: Engine):
        self.engine = engine
        self.spec = engine.scenario.aggregation
        self.position = 0  # the round in progress (async: aggregations done)
        self.total = engine.scenario.rounds
        self.aggregations = 0

    # -- what a mode knows before any simulation ----------------------------------------------------------
    @classmethod
    def sessions(cls, scenario, expected_participants: int) -> int | None:
        """Sessions a run starts (an upper estimate; None when only its virtual end is known)."""
        return scenario.rounds * max(expected_participants, 1)

    @classmethod
    def client_steps(cls, scenario, n_clients: int) -> int | None:
        """Optimiser steps one client's set takes if it takes part every time (None: not known)."""
        return scenario.rounds * scenario.local_iterations

    @classmethod
    def check(cls, spec, feasible_clients: int, method: str) -> tuple[str, str] | None:
        """Why this mode cannot run with this many clients able to hold `method`'s configuration, and the
        field to name (`plan` refuses it in one line), or None."""
        return None

    # -- the process ----------------------------------------------------------------------------------------
    def process(self):
        raise NotImplementedError

    def fill(self, done: int, steps: int) -> float:
        """How much of the round (or buffer) is done, for the progress bar."""
        return done / steps

    def close(self, rnd: int, t_start: float, wall_start: float, participants: int, updates: list[Session],
              aggregate: bool = True):
        """Aggregate `updates` (when `aggregate` and there are any) into the next version; record the row."""
        engine = self.engine
        updates = sorted(updates, key=lambda s: s.client)  # a fixed order, whatever the arrival order
        staleness = [engine.version - u.version for u in updates]
        metrics: dict[str, float] = {}
        aggregated = aggregate and bool(updates)
        if aggregated:
            metrics = yield from engine.aggregate(rnd, updates)
            self.aggregations += 1
        engine.record_round({
            "round": rnd, "version": engine.version, "t_start": t_start, "t_end": engine.env.now,
            "wall_s": time.perf_counter() - wall_start, "participants": participants,
            "infeasible": int((~engine.feasible).sum()), "aggregated": aggregated, "updates": len(updates),
            "staleness_mean": float(np.mean(staleness)) if staleness else 0.0,
            "staleness_max": int(max(staleness)) if staleness else 0, **metrics,
        }, metrics)

    def next_upload(self, deadline: float):
        """The next session out of the upload buffer, or None once `deadline` (virtual s) comes first."""
        env, get = self.engine.env, self.engine.uploads.get()
        if deadline == math.inf:
            return (yield get)
        result = yield get | env.timeout(max(0.0, deadline - env.now))
        if get not in result:
            get.cancel()
            return None
        return result[get]

    def stop_stale(self) -> None:
        """Sessions on a version older than `max_staleness` allows stop at their next iteration: their update
        would be dropped anyway, and their host need not keep that version's base."""
        limit = self.spec.max_staleness
        if limit is not None:
            for s in self.engine.running.values():
                if self.engine.version - s.version > limit:
                    s.stop = True
