"""The server's GPUs and their queue: `gpus` slots, waiting jobs ordered by the queue discipline. Three kinds:
requests waiting in a queue (`GPUQueue`), FIFO starts reserved on arrival (`GPUReservations`, `plan`'s fast
path) and batches of queued jobs (`BatchingServer`).

A heap keeps every discipline O(log n) per job (SimPy's PriorityResource re-sorts its whole queue on each request,
which is quadratic with 100k queued clients).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

import simpy


class GPUQueue:
    """`gpus` slots and a heap of waiting requests (SimPy events), ordered by the queue discipline: the path of
    `run` (it tells the executor of each server step at its start) and of disciplines other than FIFO."""

    def __init__(self, env: simpy.Environment, gpus: int):
        self.env = env
        self.free = gpus
        self.waiting: list[tuple[float, int, simpy.Event, float]] = []
        self.ends: list[float] = []  # when each running job ends
        self.seq = 0
        self.busy_s = 0.0  # GPU-seconds of server work finished, for utilisation
        self.batches = 0  # jobs finished (each its own batch)

    def __len__(self) -> int:
        """Jobs not started yet."""
        return len(self.waiting)

    def queued(self) -> int:
        """How many earlier jobs have not started by now: the waiting ones, less those that GPUs ending now
        will take (FIFO; their releases may come later in this instant), as `GPUReservations` counts."""
        due = self.ends.count(self.env.now)
        return max(0, len(self.waiting) - due)

    def request(self, key: float, busy_s: float = 0.0) -> simpy.Event:
        """An event that fires when a GPU is granted for `busy_s`; ties on `key` keep arrival (virtual time,
        then call) order."""
        event = self.env.event()
        if self.free:
            self.free -= 1
            self.ends.append(self.env.now + busy_s)
            event.succeed()
        else:
            self.seq += 1
            heapq.heappush(self.waiting, (key, self.seq, event, busy_s))
        return event

    def release(self, busy_s: float) -> None:
        self.busy_s += busy_s
        self.batches += 1
        self.ends.remove(self.env.now)
        if self.waiting:
            _, _, event, busy = heapq.heappop(self.waiting)
            self.ends.append(self.env.now + busy)
            event.succeed()
        else:
            self.free += 1


class GPUReservations:
    """FIFO GPUs without events (`plan`): a job's start is known on arrival, the earliest free GPU, exactly as
    `GPUQueue` would grant it, so an iteration waits one event instead of three."""

    def __init__(self, env: simpy.Environment, gpus: int, clients: int):
        self.env = env
        # per GPU (free from, its last job's busy s, jobs), a heap; no more GPUs than clients, which have one job
        # each at most in flight: the rest would never be used (and `server.gpus` may be 10^20)
        self.slots = [(0.0, 0.0, 0)] * min(gpus, max(1, clients))
        self.starts: deque[float] = deque()  # starts still ahead of the clock (the queue)
        self.leaving: deque[tuple[float, float, int]] = deque()  # jobs off their slot, in end order
        self._busy_s = 0.0
        self._batches = 0

    def __len__(self) -> int:
        """Jobs not started yet: reservations whose start is still ahead."""
        now, starts = self.env.now, self.starts
        while starts and starts[0] <= now:  # starts never decrease: arrivals and the earliest free GPU don't
            starts.popleft()
        return len(starts)

    def reserve(self, busy_s: float) -> tuple[float, int]:
        """A job arriving now runs `busy_s` on the GPU free first, from the later of now and that GPU's last end.
        Returns its start and how many earlier jobs have not started yet (what `len` counts on arrival).
        (`len` and the slot's pop and push are written out: this runs once per client-iteration in `plan`.)"""
        now, starts, slots, leaving = self.env._now, self.starts, self.slots, self.leaving
        while starts and starts[0] <= now:
            starts.popleft()
        waiting = len(starts)
        slot = slots[0]  # slots leave in end order: a new end is never before the one it follows
        leaving.append(slot)
        while leaving and leaving[0][0] <= now:  # finished: GPU-seconds in order of the jobs' ends, as releases add
            _, done, jobs = leaving.popleft()
            self._busy_s += done
            self._batches += jobs
        free_from = slot[0]
        start = free_from if free_from > now else now
        heapq.heapreplace(slots, (start + busy_s, busy_s, 1))
        if start > now:
            starts.append(start)
        return start, waiting

    def _finished(self) -> list[tuple[float, float, int]]:
        """Reserved jobs that have ended by now and are not counted yet, in end order (those off their slot end
        before those still on one)."""
        return [job for job in (*self.leaving, *sorted(self.slots)) if job[2] and job[0] <= self.env.now]

    @property
    def busy_s(self) -> float:
        """GPU-seconds of server work finished by now, for utilisation."""
        total = self._busy_s
        for _, done, _ in self._finished():
            total += done
        return total

    @property
    def batches(self) -> int:
        """Jobs finished by now (each its own batch)."""
        return self._batches + len(self._finished())


TICK = 1e-9  # virtual seconds: a timeout of (deadline - now) may land a rounding error short of the deadline


class Job:
    """One iteration's server work waiting for (or running in) a batch."""

    __slots__ = ("key", "group", "seq", "arrival", "done", "start", "size", "payload", "taken")

    def __init__(self, key: float, group: int, seq: int, arrival: float, done: simpy.Event, payload: object):
        self.key, self.group, self.seq, self.arrival, self.done = key, group, seq, arrival, done
        self.payload, self.start, self.size, self.taken = payload, 0.0, 0, False


class BatchingServer:
    """GPUs that run queued jobs of one group (same split point and server-side adapters) as one batch: SPEC §2's
    optional batching. When a GPU is free, the best waiting job (by the queue discipline) opens a batch with the
    best waiting jobs of its group, up to `max_jobs`. A batch that is not full waits until its first job has
    waited `max_wait_s` (holding the free GPU, like a serving system's queue delay); 0 runs what is there.

    `duration(jobs)` prices a batch; `on_start(jobs)` is the executor's hook (real computation, in start order).
    With `max_jobs` 1 every batch is one job and the timeline is GPUQueue's (tests/test_batching.py)."""

    def __init__(self, env: simpy.Environment, gpus: int, max_jobs: int, max_wait_s: float,
                 duration: Callable[[list[Job]], float], on_start: Callable[[list[Job]], None] | None = None):
        self.env, self.free, self.max_jobs, self.max_wait_s = env, gpus, max_jobs, max_wait_s
        self.duration, self.on_start = duration, on_start
        self.order: list[tuple[float, int, Job]] = []  # every waiting job (taken ones are skipped lazily)
        self.groups: dict[int, list[tuple[float, int, Job]]] = {}
        self.waiting = 0
        self.seq = 0
        self.timer_at: float | None = None
        self.busy_s = 0.0
        self.batches = 0  # batches finished

    def __len__(self) -> int:
        return self.waiting

    def submit(self, key: float, group: int, payload: object) -> Job:
        """Queue one job; its `done` event fires when its batch has finished (`start`, `size` set by then)."""
        self.seq += 1
        job = Job(key, group, self.seq, self.env.now, self.env.event(), payload)
        entry = (key, self.seq, job)
        heapq.heappush(self.order, entry)
        heapq.heappush(self.groups.setdefault(group, []), entry)
        self.waiting += 1
        self._dispatch()
        return job

    def _dispatch(self) -> None:
        while self.free and self.waiting:
            while self.order[0][2].taken:
                heapq.heappop(self.order)
            head = self.order[0][2]
            group = self.groups[head.group]
            batch = [heapq.heappop(group)[2] for _ in range(min(self.max_jobs, len(group)))]
            deadline = head.arrival + self.max_wait_s
            if len(batch) < self.max_jobs and deadline - self.env.now > TICK:
                for job in batch:  # not yet: put them back and wake up at the head's deadline
                    heapq.heappush(group, (job.key, job.seq, job))
                if self.timer_at is None or self.timer_at > deadline:
                    self.timer_at = deadline
                    self.env.timeout(deadline - self.env.now).callbacks.append(self._wake)
                return
            for job in batch:
                job.taken = True
            self.waiting -= len(batch)
            self.free -= 1
            self.env.process(self._run(batch))

    def _wake(self, _event) -> None:
        if self.timer_at is not None and self.timer_at - self.env.now <= TICK:
            self.timer_at = None
        self._dispatch()

    def _run(self, batch: list[Job]):
        now = self.env.now
        for job in batch:
            job.start, job.size = now, len(batch)
        if self.on_start is not None:
            self.on_start(batch)
        busy = self.duration(batch)
        yield self.env.timeout(busy)
        self.busy_s += busy
        self.batches += 1  # counted when done, as GPUQueue counts its jobs
        self.free += 1
        for job in batch:
            job.done.succeed()
        self._dispatch()
