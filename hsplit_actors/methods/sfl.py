"""SplitFed (SFL): one fixed split point and rank for all, or per device type; v1 per-client server side, v2 shared."""

from __future__ import annotations

import numpy as np

from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.base import Assignment, SharedServerSet, Strategy
from hsplit_actors.scenario.schema import SFLSpec


class SFL(Strategy):
    settings = SFLSpec

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.capabilities = (SharedServerSet(),) if self.spec.variant == "v2" else ()

    def configure(self, round_: int, fleet: Fleet) -> Assignment:
        spec = self.spec
        default_split = spec.split_point or self.deepest_split_for_all(fleet.memory_gb, spec.rank)
        configs, index = [], np.full(len(fleet), -1, dtype=np.int64)
        for name in np.unique(fleet.device):
            override = spec.per_device.get(name)
            split = (override.split_point if override and override.split_point else None) or default_split
            rank = override.rank if override and override.rank is not None else spec.rank
            config = self.uniform(split, rank)
            members = fleet.device == name
            if config not in configs:
                configs.append(config)
            index[members & self.fits(config, fleet.memory_gb)] = configs.index(config)
        return Assignment(configs, index)
