"""The strategy protocol: a method configures clients each round and says what its aggregation moves.

Flower-style: a method is a small object; adding a baseline is one file here plus one schema entry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from hsplit_actors.costmodel import ClientConfig, IterationCost, ModelArch, iteration_cost
from hsplit_actors.costmodel.costs import ADAPTER_BYTES
from hsplit_actors.fleet import Fleet

GIB = 2**30  # device memory figures are GiB (the "4 GB" of a Jetson Nano is 4 GiB of LPDDR4)


@dataclass
class Assignment:
    """Per-client configuration for one round: `index[i]` into `configs`, or -1 when client i cannot take part."""

    configs: list[ClientConfig]
    index: np.ndarray

    @property
    def feasible(self) -> np.ndarray:
        return self.index >= 0


class Strategy(ABC):
    """A federated/split fine-tuning method on the shared engine."""

    name: str = ""
    shared_server: bool = False  # one server-side adapter set for all clients (SFL-V2 / SplitLoRA)

    def __init__(self, spec, arch: ModelArch, batch: int, seq: int, dtype: str):
        self.spec, self.arch, self.batch, self.seq, self.dtype = spec, arch, batch, seq, dtype

    def cost(self, config: ClientConfig) -> IterationCost:
        return iteration_cost(self.arch, config, self.batch, self.seq, self.dtype)

    def fits(self, config: ClientConfig, memory_gb: np.ndarray) -> np.ndarray:
        return self.cost(config).client_memory_bytes <= memory_gb * GIB

    def uniform(self, split_point: int, rank: int | None = None) -> ClientConfig:
        return ClientConfig.uniform(self.arch, split_point, rank or self.spec.rank, self.spec.targets)

    def deepest_split_for_all(self, memory_gb: np.ndarray, rank: int) -> int:
        """The deepest split point (< L) whose configuration every given device can hold; 1 if none can."""
        weakest = memory_gb.min()
        for k in range(self.arch.n_layers - 1, 0, -1):
            if self.fits(self.uniform(k, rank), weakest):
                return k
        return 1

    @abstractmethod
    def configure(self, round_: int, fleet: Fleet) -> Assignment:
        """Split point and ranks for every client this round (-1: its budget holds no configuration)."""

    def aggregation_payload(self, assignment: Assignment, participants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bytes each participant uploads and downloads at aggregation. Default: FedAvg of its own adapters."""
        params = np.array([self.cost(c).adapter_params for c in assignment.configs], dtype=np.int64)
        own = params[assignment.index[participants]] * ADAPTER_BYTES
        return own, own.copy()


def single_config(config: ClientConfig, feasible: np.ndarray) -> Assignment:
    """Every feasible client gets `config`."""
    return Assignment([config], np.where(feasible, 0, -1).astype(np.int64))


def largest_rank_that_fits(strategy: Strategy, split_point: int, ranks: list[int], fleet: Fleet) -> Assignment:
    """Per client, the largest rank of `ranks` whose configuration fits its memory (HetLoRA / FLoRA style)."""
    choices = sorted(set(ranks))
    configs = [strategy.uniform(split_point, r) for r in choices]
    index = np.full(len(fleet), -1, dtype=np.int64)
    for j, config in enumerate(configs):  # ascending: a later (larger) fitting rank overwrites
        index[strategy.fits(config, fleet.memory_gb)] = j
    return Assignment(configs, index)
