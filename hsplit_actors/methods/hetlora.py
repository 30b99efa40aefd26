"""HetLoRA: federated, per-client rank by budget; zero-padded, norm-weighted aggregation; clients take back their
first r_i ranks (so each downloads only its own rank's share)."""

from __future__ import annotations

from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.base import Assignment, Strategy, largest_rank_that_fits


class HetLoRA(Strategy):
    name = "hetlora"

    def configure(self, round_: int, fleet: Fleet) -> Assignment:
        return largest_rank_that_fits(self, self.arch.n_layers, self.spec.ranks, fleet)
