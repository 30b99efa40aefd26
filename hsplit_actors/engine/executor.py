"""Executors: what happens besides the clock at each phase. `plan` uses TimingExecutor (nothing);
`run` plugs in one that dispatches the real computation, driven by the very same SimPy processes."""

from __future__ import annotations

from hsplit_actors.methods.base import Assignment


class Executor:
    """Hooks the engine calls in virtual-time order. The base class does nothing (timing only)."""

    clock = None  # the SimPy environment, attached by the engine (for timestamps, never for durations)
    metric = ""  # what `eval_metric` measures (accuracy, ...), where anything is evaluated

    def attach(self, env) -> None:
        self.clock = env

    def begin_round(self, round_: int, assignment: Assignment, participants) -> None:
        """A round starts with these configurations."""

    def client_forward(self, client: int, round_: int, iteration: int) -> None:
        """Client-side forward of one batch (up to the split point)."""

    def server_step(self, client: int, round_: int, iteration: int) -> None:
        """Server forward/backward for the activations of `client`; called in virtual arrival order."""

    def client_backward(self, client: int, round_: int, iteration: int) -> None:
        """Client-side backward with the returned activation gradient, and the client's optimiser step."""

    def aggregate(self, round_: int, participants) -> dict[str, float]:
        """Aggregate adapters at the round's end; returns metrics for the rounds table (losses, accuracy)."""
        return {}


class TimingExecutor(Executor):
    """No computation at all: `hsplit plan`."""
