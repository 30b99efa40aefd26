"""HetLoRA: federated, per-client rank by budget. The global adapters have rank r_max; each client trains the first
r_i ranks of them; aggregation zero-pads every client's delta (against the first r_i ranks of the version it
started from) to r_max and weights it by the norm of its update `||s_i B_i A_i||_F` (sparsity-weighted), so
ranks a client does not hold are left as they are; clients take their first r_i ranks back (so each downloads
only its own rank's share). Self-pruning: each client's loss carries `lambda * ||B[:, t:] A[t:]||_F` over its tail ranks
`t = floor(gamma r_i)`; when that tail's norm falls below the previous round's, the client drops to rank t."""

from __future__ import annotations

import math

import numpy as np

from hsplit_actors.costmodel import ClientConfig
from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.aggregate import Trained, weighted_head, zero_pad_aggregate
from hsplit_actors.methods.base import (
    Aggregate,
    Assignment,
    Strategy,
    WholeModelOnClients,
    config_ranks,
    fresh_adapters,
    largest_rank_that_fits,
)
from hsplit_actors.scenario.schema import HetLoRASpec


class HetLoRA(Strategy):
    settings = HetLoRASpec
    capabilities = (WholeModelOnClients(),)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pruned: dict[int, int] = {}  # client -> rank after self-pruning
        self.tail_norm: dict[int, float] = {}  # client -> its tail's norm last round

    def configure(self, round_: int, fleet: Fleet) -> Assignment:
        by_budget = largest_rank_that_fits(self, self.arch.n_layers, self.spec.ranks, fleet)
        if not self.pruned:
            return by_budget
        configs: list[ClientConfig] = []
        index = np.full(len(fleet), -1, dtype=np.int64)
        for c in np.flatnonzero(by_budget.feasible).tolist():
            r = self.rank_of(by_budget.configs[by_budget.index[c]])
            config = self.uniform(self.arch.n_layers, min(r, self.pruned.get(c, r)))
            if config not in configs:
                configs.append(config)
            index[c] = configs.index(config)
        return Assignment(configs, index)

    def rank_of(self, config: ClientConfig) -> int:
        return max(max(row) for row in config.ranks)

    def global_init(self, assignment: Assignment) -> dict:
        r_max = max(self.rank_of(assignment.configs[j]) for j in np.unique(assignment.index[assignment.feasible]))
        keys = {key for config in assignment.configs for key, _ in config_ranks(self.arch, config)}
        return fresh_adapters(self.arch, dict.fromkeys(keys, r_max), self.alpha, [self.seed])

    def client_adapters(self, round_: int, client: int, config: ClientConfig, global_factors: dict) -> dict:
        """The first r_i ranks of the global adapters."""
        from hsplit_actors.model.factors import LoRAFactors

        out = {}
        for key, r in config_ranks(self.arch, config):
            g = global_factors[key]
            out[key] = LoRAFactors(g.A[:r].clone(), g.B[:, :r].clone(), self.alpha(r))
        return out

    def client_regulariser(self, client: int, config: ClientConfig) -> tuple[float, int] | None:
        r = self.rank_of(config)
        tail = math.floor(self.spec.prune_gamma * r)
        return (self.spec.prune_lambda, tail) if self.spec.prune_lambda > 0 and tail < r else None

    def aggregate(self, round_: int, trained: list[Trained], current: tuple[dict, dict] = ({}, {})) -> Aggregate:
        factors = zero_pad_aggregate(trained, current[0])
        self.self_prune(trained)
        return Aggregate(factors, weighted_head(trained, current[1]))

    def self_prune(self, trained: list[Trained]) -> None:
        floor_rank = min(r for r in self.spec.ranks if r > 0)
        for t in trained:
            ranks = {f.rank for f in t.factors.values()}
            if not ranks:
                continue
            r = max(ranks)
            start = math.floor(self.spec.prune_gamma * r)
            norm = tail_norm(t.factors, start)
            if t.client in self.tail_norm and norm < self.tail_norm[t.client] and start >= floor_rank:
                self.pruned[t.client] = start
                self.tail_norm.pop(t.client)
            else:
                self.tail_norm[t.client] = norm

    def state_dict(self) -> dict:
        return {"pruned": dict(self.pruned), "tail_norm": dict(self.tail_norm)}

    def load_state_dict(self, state: dict) -> None:
        self.pruned, self.tail_norm = dict(state["pruned"]), dict(state["tail_norm"])


def tail_norm(factors: dict, start: int) -> float:
    """sum over matrices of ||s B[:, start:] A[start:]||_F: what self-pruning would remove."""
    return float(sum((f.scale * (f.B[:, start:] @ f.A[start:])).norm() for f in factors.values()))
