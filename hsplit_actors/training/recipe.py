"""The training recipe every method shares (SPEC §5): AdamW with weight decay, a learning-rate schedule, gradient
clipping, label smoothing and an optional server-side rate.

**What a step is.** The schedule is counted in each *trainable set's* own optimiser steps: a virtual client's
device-side adapters, the server's copy for one client (SFL-V1), or the shared server set (SplitLoRA, HSplitLoRA).
The count belongs to the set's owner, not to the optimiser object, so it runs on across
- NAA's adapter restarts (HSplitLoRA starts fresh adapters and a fresh AdamW after every merge; the schedule does
  not start over: a warm-up happens once per owner, not once per round),
- asynchronous sessions (a client's count is the steps of all its sessions so far, whatever version they ran on),
- checkpoints, `--resume` and fault replay (the count is part of a set's state and is captured and restored with
  its adapters, so a restored run takes the same rate at the same step).
A shared server set takes one step per job (per batch, with server batching), so it walks through its schedule
about `participants` times faster than each client does through its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hsplit_actors.errors import ScenarioError


@dataclass(frozen=True)
class Recipe:
    """How one kind of trainable set (clients', or the server's) takes its steps."""

    lr: float
    weight_decay: float = 0.01  # torch's AdamW default, and SplitLoRA's reference value
    max_grad_norm: float | None = None
    kind: str = "constant"  # constant | linear | cosine
    warmup_steps: int = 0
    total_steps: int | None = None  # where linear / cosine reach 0 (required for them)

    def factor(self, step: int) -> float:
        """The multiplier of `lr` for a set's `step`-th optimiser step (0-based): a linear warm-up reaching the
        full rate at step `warmup_steps - 1`, then flat, or decaying linearly or on a half cosine to 0 at
        `total_steps` (and 0 after it)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        span = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def rate(self, step: int) -> float:
        return self.lr * self.factor(step)


def client_steps(scenario, n_clients: int) -> int | None:
    """Optimiser steps one client's set takes if it takes part every time, as its aggregation mode counts them
    (sync: rounds x local iterations; async: its share of the sessions). None when the run's length is not known
    (async to `until_s`)."""
    from hsplit_actors.engine.schedules import schedule_for

    return schedule_for(scenario.aggregation.mode).client_steps(scenario, n_clients)


def schedule_problem(scenario, n_clients: int) -> str | None:
    """Why the schedule cannot run (a decaying schedule whose end is unknown, or a warm-up that leaves nothing
    to decay), or None. The schema asks it, so `validate` says it before anything runs."""
    schedule = scenario.train.schedule
    if schedule.kind == "constant" or schedule.total_steps is not None:
        return None
    steps = client_steps(scenario, n_clients)
    if steps is None:
        return (f"train.schedule: a {schedule.kind} schedule needs to know where it ends, and an async run bounded "
                "by until_s does not say; give train.schedule.total_steps")
    if steps <= schedule.warmup_steps:
        return (f"train.schedule: a client takes at most {steps} optimiser steps in this run, no more than "
                f"warmup_steps {schedule.warmup_steps}, so nothing is left to decay; lower warmup_steps or give "
                "total_steps")
    return None


def recipes(scenario, n_clients: int) -> tuple[Recipe, Recipe]:
    """The clients' and the server's recipe. A decaying schedule without `total_steps` ends where the run's
    steps end: `client_steps` for a client's (and an SFL-V1 server copy's) set, that times the fleet for the
    shared server set, which steps once per client iteration."""
    problem = schedule_problem(scenario, n_clients)
    if problem is not None:
        raise ScenarioError(problem)
    train, schedule = scenario.train, scenario.train.schedule
    lr = scenario.method.lr or train.lr  # a method may have its own (hsplit compare)
    total_client = total_server = schedule.total_steps
    if schedule.kind != "constant" and total_client is None:
        total_client = client_steps(scenario, n_clients)
        total_server = total_client * n_clients
    common = {"weight_decay": train.weight_decay, "max_grad_norm": train.max_grad_norm, "kind": schedule.kind,
              "warmup_steps": schedule.warmup_steps}
    return (Recipe(lr, total_steps=total_client, **common),
            Recipe(train.server_side_lr or lr, total_steps=total_server, **common))
