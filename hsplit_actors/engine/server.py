"""The server's GPUs and their queue: `gpus` slots, waiting jobs ordered by the queue discipline.

A heap keeps every discipline O(log n) per job (SimPy's PriorityResource re-sorts its whole queue on each request,
which is quadratic with 100k queued clients).
"""

from __future__ import annotations

import heapq

import simpy


class GPUPool:
    def __init__(self, env: simpy.Environment, gpus: int):
        self.env = env
        self.free = gpus
        self.waiting: list[tuple[float, int, simpy.Event]] = []
        self.seq = 0
        self.busy_s = 0.0  # total GPU-seconds of server work, for utilisation

    def __len__(self) -> int:
        return len(self.waiting)

    def request(self, key: float) -> simpy.Event:
        """An event that fires when a GPU is granted; ties on `key` keep arrival (virtual time, then call) order."""
        event = self.env.event()
        if self.free:
            self.free -= 1
            event.succeed()
        else:
            self.seq += 1
            heapq.heappush(self.waiting, (key, self.seq, event))
        return event

    def release(self, busy_s: float) -> None:
        self.busy_s += busy_s
        if self.waiting:
            heapq.heappop(self.waiting)[2].succeed()
        else:
            self.free += 1
