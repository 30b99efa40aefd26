"""FedIT (FedLoRA): federated, the whole model on every device, one rank, FedAvg of A and B separately."""

from __future__ import annotations

from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.base import Assignment, Strategy, WholeModelOnClients, single_config
from hsplit_actors.scenario.schema import FedITSpec


class FedIT(Strategy):
    settings = FedITSpec
    capabilities = (WholeModelOnClients(),)

    def configure(self, round_: int, fleet: Fleet) -> Assignment:
        config = self.uniform(self.arch.n_layers)
        return single_config(config, self.fits(config, fleet.memory_gb))
