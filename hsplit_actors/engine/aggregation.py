"""*When* updates are aggregated (SPEC §9): one SimPy process per run, fed by the upload buffer, serving `plan` and
`run` alike. It draws clients, starts their sessions, takes what they upload from the buffer and aggregates.

sync       rounds; every round's participants end before the next round starts; aggregate every `interval`
           rounds (and after the last). Between aggregations clients keep their adapters and optimiser state.
semi_sync  rounds that close `deadline_s` after they start, or once `min_updates` arrived; late clients stop
           (`late: drop`) or their update joins the next aggregation, staleness-weighted (`late: carry`).
async      FedBuff: `concurrency` sessions at once, each on the version it downloaded; every `buffer` arrivals
           are aggregated with staleness weights; a finished client is replaced by a newly drawn one. A client
           whose update waits in the buffer is not drawn again before that buffer is aggregated (its next
           session starts from a newer version), so with buffer = concurrency = every client this is sync.
"""

from __future__ import annotations

import math
import random
import time
import warnings

import numpy as np

from hsplit_actors.costmodel.costs import ADAPTER_BYTES
from hsplit_actors.engine.sim import AGGREGATE, FED_SERVER, Session, Simulation
from hsplit_actors.engine.staleness import staleness_weight


class NobodyAvailableWarning(UserWarning):
    """An asynchronous run ended early: no client could be drawn any more."""


class Schedule:
    """What every mode shares: closing a round (or filling a buffer) with an aggregation and its row."""

    label = "round"
    until_s: float | None = None

    def __init__(self, sim: Simulation):
        self.sim = sim
        spec = sim.scenario.aggregation
        self.spec = spec
        self.weight = staleness_weight(spec.weights.kind, spec.weights.a, spec.weights.b)
        self.server_lr = spec.lr
        self.position = 0  # the round in progress (async: aggregations done)
        self.total = sim.scenario.rounds
        self.aggregations = 0
        self.discarded: list[Session] = []  # not aggregated, since the last aggregation (the executor is told)

    def fill(self) -> float:
        return self.sim.round_done / self.sim.round_steps

    def process(self):
        raise NotImplementedError

    def begin(self, participants: int) -> None:
        """Progress bookkeeping for a round (or buffer) of `participants` sessions."""
        sim = self.sim
        sim.tick_every = max(1, participants * sim.scenario.local_iterations // 200)
        sim.round_done, sim.round_steps = 0, max(1, participants * sim.scenario.local_iterations)

    def close(self, rnd: int, t_start: float, wall_start: float, participants: int, updates: list[Session],
              aggregate: bool = True):
        """Aggregate `updates` (when `aggregate` and there are any) into the next version; record the row."""
        sim, env = self.sim, self.sim.env
        updates = sorted(updates, key=lambda s: s.client)  # a fixed order, whatever the arrival order
        staleness = [sim.version - u.version for u in updates]
        metrics: dict[str, float] = {}
        aggregated = aggregate and bool(updates)
        if aggregated:
            up = sum(u.up_bytes for u in updates)
            flops = 2.0 * up / ADAPTER_BYTES  # a weighted sum over every uploaded parameter
            if flops:  # centralised training aggregates nothing: no event, but the version is still published
                t0 = env.now
                yield env.timeout(flops / sim.server_flops)
                sim._record(FED_SERVER, -1, rnd, AGGREGATE, t0, env.now, 0, flops, sim.version + 1)
            coefficients = [self.server_lr * self.weight(s) for s in staleness]
            if sim.real:
                metrics = sim.executor.aggregate(rnd, sim.version + 1, list(zip(updates, staleness, coefficients,
                                                                                strict=True)),
                                                 self.discarded, list(sim.running.values()))
            self.discarded = []
            self.aggregations += 1
            sim.published([sim.log.configs[u.config_id] for u in updates])
        sim.log.rounds.append({
            "round": rnd, "version": sim.version, "t_start": t_start, "t_end": env.now,
            "wall_s": time.perf_counter() - wall_start, "participants": participants,
            "infeasible": int((~sim.feasible).sum()), "aggregated": aggregated, "updates": len(updates),
            "staleness_mean": float(np.mean(staleness)) if staleness else 0.0,
            "staleness_max": int(max(staleness)) if staleness else 0, **metrics,
        })
        if sim.on_progress is not None:
            sim.last = sim.last | {k: v for k, v in metrics.items() if v == v}  # the latest of each
            sim.round_done = sim.round_steps
            sim.report()

    def next_upload(self, deadline: float):
        """The next session out of the upload buffer, or None once `deadline` (virtual s) comes first."""
        sim, env = self.sim, self.sim.env
        get = sim.buffer.get()
        if deadline == math.inf:
            return (yield get)
        result = yield get | env.timeout(max(0.0, deadline - env.now))
        if get not in result:
            get.cancel()
            return None
        return result[get]

    def drop(self, s: Session) -> None:
        self.sim.discard(s)
        self.discarded.append(s)

    def stop_stale(self) -> None:
        """Sessions on a version older than `max_staleness` allows stop at their next iteration: their update
        would be dropped anyway, and their host need not keep that version's base."""
        limit = self.spec.max_staleness
        if limit is not None:
            for s in self.sim.running.values():
                if self.sim.version - s.version > limit:
                    s.stop = True


class Sync(Schedule):
    def process(self):
        sim, env, sc = self.sim, self.sim.env, self.sim.scenario
        every = self.spec.every
        for rnd in range(sc.rounds):
            t_start, wall_start = env.now, time.perf_counter()
            self.position = rnd
            participants = sim.participants(rnd)
            aggregate = (rnd + 1) % every == 0 or rnd == sc.rounds - 1
            self.begin(len(participants))
            for c in participants.tolist():
                sim.start_session(c, rnd, aggregate)
            updates = []
            for _ in range(len(participants)):
                s = yield sim.buffer.get()
                if s.outcome == "update":
                    updates.append(s)
            yield from self.close(rnd, t_start, wall_start, len(participants), updates, aggregate)
        sim.finished.succeed()


class SemiSync(Schedule):
    def process(self):
        sim, env, sc, spec = self.sim, self.sim.env, self.sim.scenario, self.spec
        carry = spec.late == "carry"
        carried: list[Session] = []  # late updates of earlier rounds, for the next aggregation
        for rnd in range(sc.rounds):
            t_start, wall_start = env.now, time.perf_counter()
            self.position = rnd
            participants = sim.participants(rnd)
            self.begin(len(participants))
            pending = {sim.start_session(c, rnd, True).sid for c in participants.tolist()}
            need = min(spec.min_updates or len(pending), len(pending))
            deadline = t_start + spec.deadline_s if spec.deadline_s else math.inf
            arrived: list[Session] = []
            while pending and len(arrived) < need:
                s = yield from self.next_upload(deadline)
                if s is None:
                    break
                if s.sid in pending:
                    pending.discard(s.sid)
                    if s.outcome == "update":
                        arrived.append(s)
                elif s.outcome == "update":  # an earlier round's late client
                    (carried.append if carry else self.drop)(s)
            for sid in pending:  # late: told to stop (drop), or left to finish and join a later aggregation
                if not carry:
                    sim.running[sid].stop = True
            limit = spec.max_staleness
            updates = []
            for s in carried + arrived:
                if limit is not None and sim.version - s.version > limit:
                    self.drop(s)
                else:
                    updates.append(s)
            carried = []
            yield from self.close(rnd, t_start, wall_start, len(participants), updates)
            self.stop_stale()
        sim.finished.succeed()


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


class Async(Schedule):
    label = "aggregation"

    def __init__(self, sim: Simulation):
        super().__init__(sim)
        self.total = self.spec.aggregations or 0
        self.until_s = self.spec.until_s
        self.rng = random.Random(int(np.random.SeedSequence([sim.scenario.seed, 1]).generate_state(1)[0]))
        self.buffered: list[Session] = []
        self.retry_pending = False
        self.idle_retries = 0

    def fill(self) -> float:
        return len(self.buffered) / self.spec.buffer

    def draw(self, wanted: int) -> list[int]:
        """Up to `wanted` clients from the pool, each available with its probability (and on-line), uniformly."""
        sim, pool, rng = self.sim, self.pool, self.rng
        participation, fleet = sim.fleet.participation, sim.fleet
        picked: list[int] = []
        misses = 0
        while len(picked) < wanted and pool and misses < len(pool):
            i = rng.randrange(len(pool))
            c = pool.members[i]
            p = participation[c]
            if (p >= 1.0 or rng.random() < p) and (not sim.has_windows[c] or fleet.online(c, sim.env.now)):
                picked.append(pool.take(i))
                misses = 0
            else:
                misses += 1
        return sorted(picked)  # started in client order: ties on the clock resolve as in a sync round

    def refill(self) -> None:
        sim = self.sim
        if sim.finished.triggered:
            return
        free = self.spec.concurrency - len(sim.running)
        if free <= 0:
            return
        picked = self.draw(free)
        self.participants += len(picked)
        for c in picked:
            sim.start_session(c, -1, True)
        if picked:
            self.idle_retries = 0
        if len(picked) < free and not self.retry_pending:
            if not sim.running and not self.pool and not self.buffered:
                warnings.warn("no client is left to draw (all infeasible or busy); the run ends here",
                              NobodyAvailableWarning, stacklevel=2)
                sim.finished.succeed()
            elif len(self.pool):
                self.idle_retries += 1
                if self.idle_retries > 100_000:
                    warnings.warn("no client became available in 100,000 draws; the run ends here",
                                  NobodyAvailableWarning, stacklevel=2)
                    sim.finished.succeed()
                    return
                self.retry_pending = True
                sim.env.process(self.retry())

    def retry(self):
        yield self.sim.env.timeout(self.spec.retry_s or 1.0)
        self.retry_pending = False
        self.refill()

    def process(self):
        sim, env, spec = self.sim, self.sim.env, self.spec
        self.pool = IdlePool(np.flatnonzero(sim.feasible))
        feasible = sim.feasible.copy()
        t_start, wall_start, self.participants = env.now, time.perf_counter(), 0
        until = spec.until_s or math.inf
        self.begin(spec.buffer)
        self.refill()
        while not sim.finished.triggered:
            s = yield from self.next_upload(until)
            if s is None:
                break
            if s.outcome != "update":  # dropped out or stopped: back in the pool
                self.pool.add(s.client)
            elif spec.max_staleness is not None and sim.version - s.version > spec.max_staleness:
                self.drop(s)
                self.pool.add(s.client)
            else:
                self.buffered.append(s)
            if len(self.buffered) == spec.buffer:
                index = self.aggregations
                for u in self.buffered:
                    sim.log.session_round[u.sid] = index
                yield from self.close(index, t_start, wall_start, self.participants, self.buffered)
                self.position = self.aggregations
                for u in self.buffered:
                    self.pool.add(u.client)
                self.buffered = []
                if not np.array_equal(feasible, sim.feasible):  # ARMSC changed who can take part
                    feasible = sim.feasible.copy()
                    busy = {s.client for s in sim.running.values()}
                    self.pool = IdlePool(c for c in np.flatnonzero(feasible) if c not in busy)
                self.stop_stale()
                if spec.aggregations is not None and self.aggregations >= spec.aggregations:
                    break
                t_start, wall_start, self.participants = env.now, time.perf_counter(), 0
                self.begin(spec.buffer)
            self.refill()
        if not sim.finished.triggered:
            sim.finished.succeed()


def make_schedule(sim: Simulation) -> Schedule:
    return {"sync": Sync, "semi_sync": SemiSync, "async": Async}[sim.scenario.aggregation.mode](sim)
