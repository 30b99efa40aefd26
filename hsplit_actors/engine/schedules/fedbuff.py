"""`async` (FedBuff): `concurrency` sessions at once, each on the version it downloaded; every `buffer` arrivals
are aggregated with staleness weights; a finished client is replaced by a newly drawn one. A client whose update
waits in the buffer is not drawn again before that buffer is aggregated (its next session starts from a newer
version), so with buffer = concurrency = every client this is sync."""

from __future__ import annotations

import math
import random
import time
import warnings

import numpy as np

from hsplit_actors.engine.schedules.base import Schedule, register
from hsplit_actors.engine.session import Session


class NobodyAvailableWarning(UserWarning):
    """An asynchronous run ended early: no client could be drawn any more."""


class NothingAggregatedWarning(UserWarning):
    """An asynchronous run reached `until_s` before its first aggregation: its rounds table is empty."""


class IdlePool:
    """Clients that may be drawn: O(1) random removal, so drawing stays cheap with 100k clients."""

    def __init__(self, clients) -> None:
        self.members: list[int] = []
        self.where: dict[int, int] = {}
        for c in clients:
            self.add(int(c))

    def __len__(self) -> int:
        return len(self.members)

    def add(self, c: int) -> None:
        if c not in self.where:
            self.where[c] = len(self.members)
            self.members.append(c)

    def take(self, i: int) -> int:
        c, last = self.members[i], self.members[-1]
        self.members[i], self.where[last] = last, i
        self.members.pop()
        del self.where[c]
        return c


@register("async")
class Async(Schedule):
    label = "aggregation"
    is_async = True

    def __init__(self, engine):
        super().__init__(engine)
        self.total = self.spec.aggregations or 0
        self.until_s = self.spec.until_s
        self.rng = random.Random(int(np.random.SeedSequence([engine.scenario.seed, 1]).generate_state(1)[0]))
        self.buffered: list[Session] = []
        self.retry_pending = False
        self.idle_retries = 0
        self.stops_sessions = self.spec.max_staleness is not None  # only stale sessions are ever stopped

    @classmethod
    def sessions(cls, scenario, expected_participants: int) -> int | None:
        agg = scenario.aggregation
        return None if agg.aggregations is None else agg.aggregations * agg.buffer + agg.concurrency

    @classmethod
    def client_steps(cls, scenario, n_clients: int) -> int | None:
        """Its share of `aggregations x buffer` sessions."""
        agg = scenario.aggregation
        if agg.aggregations is None:
            return None
        return math.ceil(agg.aggregations * agg.buffer / n_clients) * scenario.local_iterations

    @classmethod
    def check(cls, spec, feasible_clients: int, method: str) -> tuple[str, str] | None:
        if spec.buffer > feasible_clients:
            return (f"buffer {spec.buffer} exceeds the {feasible_clients} clients that can hold {method}'s "
                    "configuration: it would never fill; lower it", "aggregation.buffer")
        return None

    def fill(self, done: int, steps: int) -> float:
        return len(self.buffered) / self.spec.buffer

    def draw(self, wanted: int) -> list[int]:
        """Up to `wanted` clients from the pool, each available with its probability (and on-line), uniformly."""
        engine, pool, rng = self.engine, self.pool, self.rng
        participation = engine.fleet.participation
        picked: list[int] = []
        misses = 0
        while len(picked) < wanted and pool and misses < len(pool):
            i = rng.randrange(len(pool))
            c = pool.members[i]
            p = participation[c]
            if (p >= 1.0 or rng.random() < p) and engine.online(c):
                picked.append(pool.take(i))
                misses = 0
            else:
                misses += 1
        return sorted(picked)  # started in client order: ties on the clock resolve as in a sync round

    def refill(self) -> None:
        engine = self.engine
        if engine.finished.triggered:
            return
        free = self.spec.concurrency - len(engine.running)
        if free <= 0:
            return
        picked = self.draw(free)
        self.participants += len(picked)
        for c in picked:
            engine.start_session(c, -1, True)
        if picked:
            self.idle_retries = 0
        if len(picked) < free and not self.retry_pending:
            if not engine.running and not self.pool and not self.buffered:
                warnings.warn("no client is left to draw (all infeasible or busy); the run ends here",
                              NobodyAvailableWarning, stacklevel=2)
                engine.finished.succeed()
            elif len(self.pool):
                self.idle_retries += 1
                if self.idle_retries > 100_000:
                    warnings.warn("no client became available in 100,000 draws; the run ends here",
                                  NobodyAvailableWarning, stacklevel=2)
                    engine.finished.succeed()
                    return
                self.retry_pending = True
                engine.env.process(self.retry())

    def retry(self):
        yield self.engine.env.timeout(self.spec.retry_s or 1.0)
        self.retry_pending = False
        self.refill()

    def process(self):
        engine, env, spec = self.engine, self.engine.env, self.spec
        self.pool = IdlePool(np.flatnonzero(engine.feasible))
        feasible = engine.feasible.copy()
        t_start, wall_start, self.participants = env.now, time.perf_counter(), 0
        until = spec.until_s or math.inf
        engine.begin_progress(spec.buffer)
        self.refill()
        while not engine.finished.triggered:
            s = yield from self.next_upload(until)
            if s is None:
                break
            if s.outcome != "update":  # dropped out or stopped: back in the pool
                self.pool.add(s.client)
            elif spec.max_staleness is not None and engine.version - s.version > spec.max_staleness:
                engine.discard(s)
                self.pool.add(s.client)
            else:
                self.buffered.append(s)
            if len(self.buffered) == spec.buffer:
                index = self.aggregations
                for u in self.buffered:
                    engine.assign_round(u, index)
                yield from self.close(index, t_start, wall_start, self.participants, self.buffered)
                self.position = self.aggregations
                for u in self.buffered:
                    self.pool.add(u.client)
                self.buffered = []
                if not np.array_equal(feasible, engine.feasible):  # ARMSC changed who can take part
                    feasible = engine.feasible.copy()
                    busy = {s.client for s in engine.running.values()}
                    self.pool = IdlePool(c for c in np.flatnonzero(feasible) if c not in busy)
                self.stop_stale()
                if spec.aggregations is not None and self.aggregations >= spec.aggregations:
                    break
                t_start, wall_start, self.participants = env.now, time.perf_counter(), 0
                engine.begin_progress(spec.buffer)
            self.refill()
        if not self.aggregations and self.until_s is not None and env.now >= self.until_s:
            warnings.warn(f"no aggregation by until_s ({self.until_s:g} s): the first buffer of {spec.buffer} "
                          "updates fills later; raise aggregation.until_s or lower aggregation.buffer",
                          NothingAggregatedWarning, stacklevel=2)
        if not engine.finished.triggered:
            engine.finished.succeed()
