"""FLoRA: federated, per-client rank by budget, stacking aggregation (HSplitLoRA's NAA without the split): every
client downloads the whole stack, folds it into its base and restarts its adapters."""

from __future__ import annotations

import numpy as np

from hsplit_actors.costmodel import ClientConfig
from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.aggregate import Trained, stack, weighted_head
from hsplit_actors.methods.base import (
    Aggregate,
    Assignment,
    FreshAdapters,
    Strategy,
    WholeModelOnClients,
    config_ranks,
    fresh_adapters,
    largest_rank_that_fits,
)
from hsplit_actors.scenario.schema import FLoRASpec


class FLoRA(Strategy):
    settings = FLoRASpec
    capabilities = (FreshAdapters(), WholeModelOnClients())

    def configure(self, round_: int, fleet: Fleet) -> Assignment:
        return largest_rank_that_fits(self, self.arch.n_layers, self.spec.ranks, fleet)

    def stack_download(self, configs: list[ClientConfig]) -> np.ndarray:
        stacked = sum(self.upload_bytes(c) for c in configs)  # the stacked factors of all its updates
        return np.full(self.arch.n_layers + 1, stacked, dtype=np.int64)

    def global_init(self, assignment: Assignment) -> dict:
        return {}

    def client_adapters(self, round_: int, client: int, config: ClientConfig, global_factors: dict) -> dict:
        return fresh_adapters(self.arch, dict(config_ranks(self.arch, config)), self.alpha,
                              [self.seed, round_, client])

    def aggregate(self, round_: int, trained: list[Trained], current: tuple[dict, dict] = ({}, {})) -> Aggregate:
        return Aggregate({}, weighted_head(trained, current[1]), merge=stack(trained))
