"""How the executor reaches the hosts: directly (in-process) or as Ray actors. Arguments that are ObjectRefs go
actor to actor; the coordinator only ever holds references to activations and gradients."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
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

    def kill(self, host: Any, restart: bool = True) -> None:
        raise RuntimeError("killing a host needs Ray actors (train.local is set)")

    def revive(self, client_hosts: list, server: Any) -> tuple[list[str], Any]:
        """In-process hosts cannot die."""
        return [], server


class RayRuntime:
    """Ray actors: calls are submitted (the coordinator is the only submitter, so each actor sees them in virtual
    order); at most `max_in_flight` submitted results are outstanding before the coordinator waits."""

    def __init__(self, max_in_flight: int = 64, replace_client: Callable[[int, str | None], Any] | None = None,
                 replace_server: Callable[[], Any] | None = None):
        import ray

        self.ray = ray
        self.max_in_flight = max_in_flight
        self.in_flight: deque = deque()
        self.replace_client, self.replace_server = replace_client, replace_server  # for hosts gone for good

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
                self.ray.exceptions.ActorUnavailableError, self.ray.exceptions.ActorUnschedulableError)

    def kill(self, host: Any, restart: bool = True) -> None:
        """Kill a host's process; Ray restarts it (max_restarts) with an empty state. `restart=False`: it is gone
        for good, as when its node is lost."""
        self.ray.kill(host, no_restart=not restart)

    def revive(self, client_hosts: list, server: Any, timeout_s: float = 120.0) -> tuple[list[str], Any]:
        """Wait until every host answers. A host that is dead for good (its node lost, or killed without restart)
        is replaced by a new actor (client hosts in `client_hosts`, in place); returns what was replaced and the
        server, perhaps a new one. The caller restores their state, as for a restarted host."""
        import time

        replaced: list[str] = []
        deadline = time.monotonic() + timeout_s
        for index, host in [*enumerate(client_hosts), (None, server)]:
            while True:
                try:
                    self.ray.get(host.call.remote("ping"), timeout=10)
                    break
                except self.errors + (self.ray.exceptions.GetTimeoutError,) as exc:
                    make = self.replace_server if index is None else self.replace_client
                    gone, node = _dead_for_good(host, exc) if make is not None else (False, None)
                    if gone and time.monotonic() <= deadline:
                        if index is None:
                            host = server = make()
                            replaced.append("the server actor")
                        else:
                            host = client_hosts[index] = make(index, node)
                            replaced.append(f"client actor {index}")
                        continue
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        return replaced, server


def _dead_for_good(actor: Any, exc: BaseException) -> tuple[bool, str | None]:
    """Whether Ray will not bring this actor back: it is DEAD, unschedulable (hard affinity to a node that is
    gone), or the node it last ran on is gone (it would be restarted there); and that node, to avoid."""
    import ray

    from hsplit_actors.training.ray_state import actor_info, live_nodes

    state, node = actor_info(actor)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ray.exceptions.ActorUnschedulableError):
            return True, node
        cause = cause.__cause__ or cause.__context__
    if state == "DEAD":
        return True, node
    return bool(node) and node not in live_nodes(), node
