"""How the executor reaches the hosts: directly (in-process) or as Ray actors. Arguments that are ObjectRefs go
actor to actor; the coordinator only ever holds references to activations and gradients."""

from __future__ import annotations

from collections import deque
from typing import Any


class LocalRuntime:
    """Everything in this process: calls run at once, results are values."""

    def call(self, host: Any, method: str, *args: Any, returns: int = 1) -> Any:
        return getattr(host, method)(*args)

    def get(self, value: Any) -> Any:
        return value

    def bound(self, handle: Any) -> None:
        """Nothing is ever in flight."""


class RayRuntime:
    """Ray actors: calls are submitted (the coordinator is the only submitter, so each actor sees them in virtual
    order); at most `max_in_flight` submitted results are outstanding before the coordinator waits."""

    def __init__(self, max_in_flight: int = 64):
        import ray

        self.ray = ray
        self.max_in_flight = max_in_flight
        self.in_flight: deque = deque()

    def call(self, host: Any, method: str, *args: Any, returns: int = 1) -> Any:
        return getattr(host, method).options(num_returns=returns).remote(*args)

    def get(self, value: Any) -> Any:
        return self.ray.get(value)

    def bound(self, handle: Any) -> None:
        self.in_flight.append(handle)
        while len(self.in_flight) > self.max_in_flight:
            self.ray.wait([self.in_flight.popleft()], num_returns=1)
