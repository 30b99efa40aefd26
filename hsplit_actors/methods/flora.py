"""FLoRA: federated, per-client rank by budget, stacking aggregation (every client downloads the whole stack)."""

from __future__ import annotations

import numpy as np

from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.base import Assignment, Strategy, largest_rank_that_fits


class FLoRA(Strategy):
    name = "flora"

    def configure(self, round_: int, fleet: Fleet) -> Assignment:
        return largest_rank_that_fits(self, self.arch.n_layers, self.spec.ranks, fleet)

    def aggregation_payload(self, assignment: Assignment, participants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        up, _ = super().aggregation_payload(assignment, participants)
        stack = int(up.sum())  # the stacked factors of all participants
        return up, np.full(len(participants), stack, dtype=np.int64)
