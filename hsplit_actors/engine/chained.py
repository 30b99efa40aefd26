"""`plan`'s fast path for a session nothing can interrupt: `Simulation.session` written as callbacks on the clock.

Where no one ever looks at a session mid-way (`plan`, split, FIFO reservations, a schedule that never stops
sessions, a client always on-line), each iteration is one wake-up, at the next iteration's arrival at the server
(the last one: at its end), and a GPU start is reserved on arrival. With half a million sessions live, resuming a
SimPy process per wake-up (the event, its callback list, two generator frames) was most of an async `plan`'s time;
here a wake-up is one heap entry and one method call. The wake-ups are taken in exactly the order in which
`Simulation.session`'s events would be created, so the tables are the same bit for bit (the reservations law in
tests/test_engine.py compares them with the queued, unchained path).

Rows are recorded at the next wake-up, after the iteration's end: `Simulation.run` restores end order and records
those a run's end cut off (`Simulation._flush`, from `Session.pending`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simpy.events import URGENT

from hsplit_actors.engine.clock import Waker
from hsplit_actors.engine.session import AGG_DOWN, AGG_UP, Session

if TYPE_CHECKING:
    from hsplit_actors.engine.sim import Simulation

STARTING, DOWNLOADING, ITERATING, UPLOADING = range(4)


class ChainedSession(Waker):
    """One session's download, iterations and upload, advanced by the clock: `start()` and then `wake()`s."""

    __slots__ = ("sim", "s", "t_fwd", "t_up", "t_srv", "t_down", "t_bwd", "state", "it", "last", "t0", "t1",
                 "t2", "row")

    def __init__(self, sim: Simulation, s: Session, phases: tuple[float, float, float, float, float]):
        self.sim, self.s = sim, s
        self.t_fwd, self.t_up, self.t_srv, self.t_down, self.t_bwd = phases
        self.state, self.it, self.last = STARTING, 0, sim.scenario.local_iterations - 1
        self.t0 = self.t1 = self.t2 = 0.0
        self.row: tuple | None = None  # the finished iteration's (boundaries, iteration, queue length)

    def start(self) -> None:
        """Where `env.process` would schedule the session's first step: urgently, now."""
        self.sim.env.wake(self, self.sim.env._now, priority=URGENT)

    def wake(self) -> None:
        state = self.state
        if state == ITERATING:
            self._arrive()
        elif state == STARTING:
            if self.s.down_bytes:
                self._transfer(DOWNLOADING, self.s.down_bytes, "downlink_mbps")
            else:
                self._first()
        elif state == DOWNLOADING:
            s = self.s
            self.sim._record(s.client, s.sid, -1, AGG_DOWN, self.t0, self.sim.env._now, s.down_bytes, 0.0, s.version)
            self._first()
        else:  # UPLOADING
            s = self.s
            self.sim._record(s.client, s.sid, -1, AGG_UP, self.t0, self.sim.env._now, s.up_bytes, 0.0, s.version)
            self._finish()

    def _transfer(self, state: int, nbytes: int, link: str) -> None:
        """As `Simulation._transfer`: a wake-up where a timeout of bytes / bandwidth + latency would land."""
        env, device, c = self.sim.env, self.sim.device, self.s.client
        self.state, self.t0 = state, env._now
        env.wake(self, env._now + (nbytes * 8 / (device[link][c] * 1e6) + device["latency_ms"][c] / 1e3))

    def _first(self) -> None:
        """The first iteration's forward and uplink: one wake-up at its arrival at the server."""
        env = self.sim.env
        self.state, self.t0 = ITERATING, env._now
        self.t1 = self.t0 + self.t_fwd
        self.t2 = self.t1 + self.t_up
        env.wake(self, self.t2)

    def _arrive(self) -> None:
        """At iteration `it`'s arrival: record the one before it, reserve a GPU, wake at the next arrival (the
        last iteration: at its end). Past the last, upload."""
        sim, s = self.sim, self.s
        row = self.row
        if row is not None:
            log = sim.log
            log.iter_times.extend(row[0])
            log.iter_ints.extend((s.client, s.sid, row[1], s.config_id, row[2], s.version, 1))
            if sim.on_progress is not None:
                sim._tick()
        it = self.it
        if it > self.last:
            self._upload()
            return
        t3, queue_len = sim.gpus.reserve(self.t_srv)
        t4 = t3 + self.t_srv
        t5 = t4 + self.t_down
        t6 = t5 + self.t_bwd
        row = self.row = ((self.t0, self.t1, self.t2, t3, t4, t5, t6), it, queue_len)
        self.it = it + 1
        if it < self.last:  # on through the next forward and uplink
            s.pending = row  # if the run ends first: `Simulation._flush`
            self.t0 = t6
            self.t1 = t6 + self.t_fwd
            self.t2 = self.t1 + self.t_up
            sim.env.wake(self, self.t2, t3)  # parked in the GPU queue's order until it starts
        else:
            s.pending = None
            sim.env.wake(self, t6, t3)

    def _upload(self) -> None:
        s = self.s
        if s.uploads and s.up_bytes:
            self._transfer(UPLOADING, s.up_bytes, "uplink_mbps")
        else:
            self._finish()

    def _finish(self) -> None:
        self.sim._deliver(self.s)
