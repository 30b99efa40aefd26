"""Centralised LoRA: all data on the server, which trains the whole model; the upper reference, no aggregation.
Every client's batches go to one shared adapter set, in virtual arrival order."""

from __future__ import annotations

import numpy as np

from hsplit_actors.costmodel import ClientConfig
from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.aggregate import Trained
from hsplit_actors.methods.base import Aggregate, Assignment, SharedServerSet, Strategy, single_config
from hsplit_actors.scenario.schema import CenLoRASpec


class CenLoRA(Strategy):
    settings = CenLoRASpec
    capabilities = (SharedServerSet(),)

    def configure(self, round_: int, fleet: Fleet) -> Assignment:
        return single_config(self.uniform(0), np.ones(len(fleet), dtype=bool))

    def upload_bytes(self, config: ClientConfig) -> int:
        return 0  # the data itself went to the server, batch by batch

    def aggregate(self, round_: int, trained: list[Trained], current: tuple[dict, dict] = ({}, {})) -> Aggregate:
        """Nothing to aggregate: every participant's copy is the one shared server set."""
        return Aggregate(dict(trained[0].factors), dict(trained[0].head)) if trained else Aggregate({}, {})
