"""Executors: what happens besides the clock at each phase. `plan` uses TimingExecutor (nothing);
`run` plugs in one that dispatches the real computation, driven by the very same SimPy processes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hsplit_actors.engine.session import Session, Update


@dataclass(frozen=True)
class AggregationStep:
    """Everything one aggregation needs, handed to the executor once: the updates (client order) folded into
    version `version`, the server rate that scales them, the sessions dropped since the last aggregation and
    those still training. `publish()` makes the version current on the clock and has the strategy configure
    clients for it; the executor calls it exactly once, after aggregating and before it starts the version."""

    round: int
    version: int
    updates: tuple[Update, ...]
    server_lr: float
    discarded: tuple[Session, ...]
    running: tuple[Session, ...]
    publish: Callable[[], None]


class Executor:
    """Hooks the engine calls in virtual-time order. The base class does nothing (timing only). `s` is the
    engine's Session: client, its own session count (`number`), the version it trains on."""

    clock = None  # the SimPy environment, attached by the engine (for timestamps, never for durations)
    metric = ""  # what `eval_metric` measures (accuracy, ...), where anything is evaluated

    def attach(self, env) -> None:
        self.clock = env

    def start(self) -> None:
        """Version 0 exists and the strategy configured clients for it."""

    def begin_session(self, s, config) -> None:
        """A client starts a session on version `s.version` with this configuration."""

    def client_forward(self, s, iteration: int) -> None:
        """Client-side forward of one batch (up to the split point)."""

    def server_step(self, s, iteration: int) -> None:
        """Server forward/backward for the activations of `s.client`; called in virtual arrival order."""

    def server_batch(self, jobs: list) -> None:
        """Several clients' server steps ((session, iteration), in queue order) that the batching server runs as
        one batch. `run`'s executor makes them one forward/backward and one optimiser step; this default (for
        executors with nothing to batch) takes them one by one."""
        for s, iteration in jobs:
            self.server_step(s, iteration)

    def client_backward(self, s, iteration: int) -> None:
        """Client-side backward with the returned activation gradient, and the client's optimiser step."""

    def aggregate(self, step: AggregationStep) -> dict:
        """The one aggregation step: fold the updates into the next version, merge, evaluate, `step.publish()`,
        start the version (and take the recovery point). Returns the rounds table's metrics. Timing only:
        nothing to fold, so it publishes."""
        step.publish()
        return {}

    def finish(self, rows: list[dict]) -> None:
        """The run is over (e.g. evaluate the last version if nothing did)."""


class TimingExecutor(Executor):
    """No computation at all: `hsplit plan`."""
