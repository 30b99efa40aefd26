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

    errors: tuple = ()

    def kill(self, host: Any) -> None:
        raise RuntimeError("killing a host needs Ray actors (train.local is set)")

    def wait_until_alive(self, hosts: list) -> None:
        """In-process hosts cannot die."""


class RayRuntime:
    """Ray actors: calls are submitted (the coordinator is the only submitter, so each actor sees them in virtual
    order); at most `max_in_flight` submitted results are outstanding before the coordinator waits."""

    def __init__(self, max_in_flight: int = 64):
        import ray

        self.ray = ray
        self.max_in_flight = max_in_flight
        self.in_flight: deque = deque()

    def call(self, host: Any, method: str, *args: Any, returns: int = 1) -> Any:
        return host.call.options(num_returns=returns).remote(method, *args)  # a HostActor (actors.py)

    def get(self, value: Any) -> Any:
        return self.ray.get(value)

    def bound(self, handle: Any) -> None:
        self.in_flight.append(handle)
        while len(self.in_flight) > self.max_in_flight:
            self.ray.wait([self.in_flight.popleft()], num_returns=1)

    @property
    def errors(self) -> tuple:
        return (self.ray.exceptions.RayActorError, self.ray.exceptions.RayTaskError,
                self.ray.exceptions.ActorUnavailableError)

    def kill(self, host: Any) -> None:
        """Kill a host's process; Ray restarts it (max_restarts) with an empty state."""
        self.ray.kill(host, no_restart=False)

    def wait_until_alive(self, hosts: list, timeout_s: float = 120.0) -> None:
        import time

        deadline = time.monotonic() + timeout_s
        for host in hosts:
            while True:
                try:
                    self.ray.get(host.call.remote("ping"), timeout=10)
                    break
                except self.errors + (self.ray.exceptions.GetTimeoutError,):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
