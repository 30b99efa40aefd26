"""The strategy protocol: a method configures clients each round, says what its aggregation moves, and (in
`hsplit run`) gives each client its starting adapters and aggregates what they trained.

Flower-style: a method is a small object; adding a baseline is one file here plus one schema entry. FedAvg, the
default aggregation, lives here because four methods share it; stacking (NAA) lives in `hsplitlora.py`.
Torch is imported only inside the training-side methods, so `hsplit plan` never loads it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from hsplit_actors.costmodel import ClientConfig, IterationCost, ModelArch, iteration_cost
from hsplit_actors.costmodel.costs import ADAPTER_BYTES
from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.aggregate import Key, Trained, fedavg

C = TypeVar("C")

GIB = 2**30  # device memory figures are GiB (the "4 GB" of a Jetson Nano is 4 GiB of LPDDR4)




@dataclass
class ServerInfo:
    """What a strategy may know about the server when it configures clients."""

    flops: float = 1e14
    memory_gb: float = 40.0
    gpus: int = 1


@dataclass
class Aggregate:
    """What an aggregation produces: the new global adapters, and (stacking methods) the stacked factors every
    host folds into its frozen base, after which clients restart their adapters."""

    factors: dict  # Key -> LoRAFactors; empty when everything was merged
    head: dict
    merge: dict | None = None  # Key -> LoRAFactors whose B @ A (scale folded into A) is added to the base


@dataclass
class Assignment:
    """Per-client configuration for one round: `index[i]` into `configs`, or -1 when client i cannot take part."""

    configs: list[ClientConfig]
    index: np.ndarray

    @property
    def feasible(self) -> np.ndarray:
        return self.index >= 0


# -- capabilities: what a method needs of the engine beyond configure / aggregate. A method lists the ones it
# has; the engine and the executor ask for one by its kind (`strategy.capability(SharedServerSet)`), so adding
# a method never adds a branch there, and a capability's meaning is written once, here.
@dataclass(frozen=True)
class SharedServerSet:
    """SFL-V2 (SplitLoRA, HSplitLoRA, CenLoRA): one server-side adapter set that every client's activations train
    in arrival order; one copy in server memory, and the server can batch their jobs. Without it the server keeps
    a copy per client (SFL-V1)."""


@dataclass(frozen=True)
class FreshAdapters:
    """Each version starts from fresh adapters, the aggregate having been merged into the base (NAA, FLoRA).
    `keep_optimizer`: AdamW's moments still carry across the restart where shapes are unchanged (an ablation)."""

    keep_optimizer: bool = False


@dataclass(frozen=True)
class ImportanceCalibration:
    """IWI: in the first `iterations` local iterations of each session the hosts report |W * dL/dW| per
    candidate matrix, which `Strategy.observe_importance` receives at the aggregation."""

    iterations: int


@dataclass(frozen=True)
class WholeModelOnClients:
    """FedIT, FLoRA, HetLoRA: every client trains the whole model, so the server host has no per-step work (it
    only evaluates) and every core can be a client actor."""


class Strategy(ABC):
    """A federated/split fine-tuning method on the shared engine."""

    name: str = ""  # set by `methods.register` from the settings class
    settings: type | None = None  # the method's settings class (scenario.schema), registered with it
    capabilities: tuple = ()  # SharedServerSet, FreshAdapters, ImportanceCalibration, WholeModelOnClients: its own
    durations = None  # engine.durations.Durations, set by `prepare`: a method that estimates latency uses it (ARMSC)

    def __init__(self, spec, arch: ModelArch, batch: int, seq: int, dtype: str, seed: int = 0,
                 server: ServerInfo | None = None):
        self.spec, self.arch, self.batch, self.seq, self.dtype = spec, arch, batch, seq, dtype
        self.seed, self.server = seed, server or ServerInfo()

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

    def upload_bytes(self, config: ClientConfig) -> int:
        """Bytes a participant uploads after its local iterations: its own adapters."""
        return self.cost(config).adapter_params * ADAPTER_BYTES

    def stack_download(self, configs: list[ClientConfig]) -> np.ndarray | None:
        """Stacking methods: the bytes a client split at k (index 0..L) downloads of one published aggregate built
        from updates of these configurations. None (FedAvg family): a client downloads the global adapters of its
        own configuration, as many bytes as it uploads, however many versions it missed."""
        return None

    def capability(self, kind: type[C]) -> C | None:
        """This method's capability of that kind, or None if it has none."""
        return next((c for c in self.capabilities if isinstance(c, kind)), None)

    def keeps_optimizer(self) -> bool:
        """Whether a host's optimiser state survives a new version when the adapters keep their shapes."""
        restart = self.capability(FreshAdapters)
        return restart is None or restart.keep_optimizer

    # -- training (`hsplit run`) ----------------------------------------------------------------------------

    def alpha(self, rank: int) -> float:
        return float(self.spec.alpha or 2.0 * rank)

    def adapter_keys(self, assignment: Assignment) -> set[Key]:
        """Every (block, matrix) some client may adapt during the run: the hosts inject one LoRA slot for each."""
        return {key for config in _used(assignment) for key, _ in config_ranks(self.arch, config)}

    def global_init(self, assignment: Assignment) -> dict:
        """The global adapters at round 0: one rank per matrix, A random, B = 0 (seeded)."""
        ranks: dict[Key, int] = {}
        for config in _used(assignment):
            for key, r in config_ranks(self.arch, config):
                if ranks.setdefault(key, r) != r:
                    raise ValueError(f"block {key[0]} {key[1]} has ranks {ranks[key]} and {r} across clients; "
                                     f"{self.name} averages factors and needs one rank")
        return fresh_adapters(self.arch, ranks, self.alpha, [self.seed])

    def client_adapters(self, round_: int, client: int, config: ClientConfig, global_factors: dict) -> dict:
        """The adapters `client` starts the round with (both sides of its split): here, the global ones."""
        return {key: global_factors[key] for key, _ in config_ranks(self.arch, config)}

    def server_adapters(self, round_: int) -> dict | None:
        """A shared server set of the method's own making for this round (HSplitLoRA), or None: the shared set
        then starts from each participant's `client_adapters` (SplitLoRA, SFL-V2, CenLoRA)."""
        return None

    def aggregate(self, round_: int, trained: list[Trained], current: tuple[dict, dict] = ({}, {})) -> Aggregate:
        """FedAvg of A and of B separately, per matrix, over the participants that trained it: the weighted deltas
        against the versions they started from, applied to `current` (the global adapters and head)."""
        return Aggregate(*fedavg(trained, current))

    def observe_importance(self, round_: int, scores: dict[int, dict[Key, float]], weights: dict[int, float]):
        """Per-client |W * dL/dW| scores from the round's calibration iterations (only IWI methods use them)."""
        return None

    def importance_rows(self) -> list[dict]:
        """The `importance` table (round, block, matrix, score, raw); empty for methods without IWI."""
        return []

    def client_regulariser(self, client: int, config: ClientConfig) -> tuple[float, int] | None:
        """(weight, first rank) of a penalty on the client's tail ranks (HetLoRA self-pruning), or None."""
        return None

    def state_dict(self) -> dict:
        """What the strategy learned during the run (checkpointed each round, so --resume replays it)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`."""
        return None


def _used(assignment: Assignment) -> list[ClientConfig]:
    return [assignment.configs[j] for j in np.unique(assignment.index[assignment.feasible])]


def config_ranks(arch: ModelArch, config: ClientConfig):
    """(key, rank) for every adapted matrix of a configuration, on both sides of its split."""
    for b, row in enumerate(config.ranks):
        for m, r in zip(arch.matrices, row, strict=True):
            if r:
                yield (b, m), r


def fresh_adapters(arch: ModelArch, ranks: dict[Key, int], alpha, seed_parts: list[int]) -> dict:
    """New adapters (A Kaiming-uniform as peft, B = 0: a no-op to start) at `ranks`, seeded by `seed_parts` and
    the key alone, so a client's starting point does not depend on which other keys or clients exist."""
    import torch

    from hsplit_actors.model.factors import LoRAFactors

    out = {}
    for (b, m), r in sorted(ranks.items()):
        in_features, out_features = arch.matrix_shape(m)
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([*seed_parts, b, arch.matrices.index(m)])
                                              .generate_state(1)[0]))
        bound = 1 / np.sqrt(in_features)  # kaiming_uniform_ with a = sqrt(5)
        A = (torch.rand(r, in_features, generator=g) * 2 - 1) * bound
        out[(b, m)] = LoRAFactors(A, torch.zeros(out_features, r), alpha(r))
    return out


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
