"""SplitLoRA: one split point for all (default: the deepest the weakest device holds), rank r on query/value,
FedAvg of A and B separately, one shared server-side adapter set."""

from __future__ import annotations

from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.base import Assignment, SharedServerSet, Strategy, single_config
from hsplit_actors.scenario.schema import SplitLoRASpec


class SplitLoRA(Strategy):
    settings = SplitLoRASpec
    capabilities = (SharedServerSet(),)

    def configure(self, round_: int, fleet: Fleet) -> Assignment:
        split = self.spec.split_point or self.deepest_split_for_all(fleet.memory_gb, self.spec.rank)
        config = self.uniform(split)
        return single_config(config, self.fits(config, fleet.memory_gb))
