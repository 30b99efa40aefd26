"""HSplitLoRA (SPEC §4), all of it in this file: important-weight identification (IWI), adaptive rank and split
configuration (ARMSC) and noise-free adapter aggregation (NAA, stacking). The baselines sit beside it.

IWI   the hosts report `s_m = mean(|W * dL/dW|)` per (block, matrix) from hooks during ordinary iterations
      (`training/importance.py`); `Importance` normalises by the per-rank cost `in + out`, combines clients by data
      size and smooths over rounds.
ARMSC per client: the split point with the lowest estimated iteration latency among those its memory holds
      (ties: deeper; `split_objective` offers the deepest it holds, or SplitLoRA's one split for all), then ranks
      from Q greedily by importance gained per byte, until the budget is spent (`rank_rule: uniform`: one rank
      for every matrix, IWI off). The
      server keeps one adapter set for the blocks after the splits, trained on every client's activations in
      arrival order (as SplitLoRA's server side, so it sees all clients' data); its ranks follow the same rule
      under the server's memory. Reconfigured only when the importance ranking has moved past a threshold since
      the last configuration (hysteresis).
NAA   per matrix, `A = concat(p_i s_i A_i)`, `B = concat(B_i)`, so `B A = sum p_i s_i B_i A_i` exactly for any
      mix of ranks and split points; every host folds it into its frozen base and clients restart their adapters
      (`aggregator: zero_pad` averages A and B apart instead, for the ablation; `optimizer_on_restart: keep`
      keeps AdamW's moments across the restarts).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from hsplit_actors.costmodel import ClientConfig, ModelArch, iteration_cost
from hsplit_actors.costmodel.arch import DTYPE_BYTES
from hsplit_actors.costmodel.costs import ADAM_COPIES, ADAPTER_BYTES
from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.aggregate import Key, Trained, stack, weighted_head, zero_padded_average
from hsplit_actors.methods.base import (
    GIB,
    Aggregate,
    Assignment,
    FreshAdapters,
    ImportanceCalibration,
    SharedServerSet,
    Strategy,
    config_ranks,
    fresh_adapters,
)
from hsplit_actors.scenario.schema import HSplitLoRASpec
from hsplit_actors.timing.roofline import Rates
from hsplit_actors.timing.sources import Roofline


# -- IWI ------------------------------------------------------------------------------------------------------
class Importance:
    """`I_m(t) = beta I_m(t-1) + (1 - beta) s_m(t) / (in_m + out_m)`, starting from the first observation.
    Before any training (and in `plan`) every matrix scores 1 / (in + out): cheaper matrices first."""

    def __init__(self, arch: ModelArch, beta: float, matrices: tuple[str, ...]):
        self.arch, self.beta = arch, beta
        self.keys = [(b, m) for b in range(arch.n_layers) for m in matrices]
        self.per_rank_cost = {m: sum(arch.matrix_shape(m)) for m in matrices}
        self.scores: dict[Key, float] = {k: 1.0 / self.per_rank_cost[k[1]] for k in self.keys}
        self.observed = False
        self.rows: list[dict] = []

    def update(self, round_: int, per_client: dict[int, dict[Key, float]], weights: dict[int, float]) -> None:
        """Combine the clients' (and the server's on their behalf) raw scores by data size, normalise, smooth."""
        for key in self.keys:
            held = [(s[key], weights[c]) for c, s in per_client.items() if key in s]
            if not held:
                continue
            raw = sum(s * w for s, w in held) / sum(w for _, w in held)
            normalised = raw / self.per_rank_cost[key[1]]
            previous = self.scores[key] if self.observed else normalised
            self.scores[key] = self.beta * previous + (1 - self.beta) * normalised
            self.rows.append({"round": round_, "block": key[0], "matrix": key[1], "score": self.scores[key],
                              "raw": raw, "clients": len(held)})
        self.observed = self.observed or bool(per_client)

    def snapshot(self) -> dict[Key, float]:
        return dict(self.scores)


def ranking_distance(a: dict[Key, float], b: dict[Key, float]) -> float:
    """Normalised Kendall distance: the fraction of matrix pairs the two importance maps order differently."""
    keys = sorted(a)
    x, y = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
    dx, dy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    pairs = len(keys) * (len(keys) - 1)
    return float((dx * dy < 0).sum() / pairs) if pairs else 0.0


# -- ARMSC ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Device:
    flops: float
    memory_gb: float
    uplink_mbps: float
    downlink_mbps: float
    latency_ms: float
    mem_gbps: float = 1e6
    launch_us: float = 0.0
    group: float | None = None  # its fleet entry, when some entry has a measured profile (else every device prices
    # its compute with the default model and the entry does not matter)


def step_priority(importance: float, rank: int, nxt: int) -> float:
    """How much a rank step r -> r' of one matrix is worth per byte it costs: `I_m (log(1 + r') - log(1 + r)) /
    (r' - r)`. `I_m` is already divided by the matrix's per-rank cost `in + out` (IWI's resource normalisation,
    SPEC §4), and the step costs `(r' - r) (in + out)` parameters, so this is raw importance per byte with the
    cost counted **once**: dividing by the step's bytes as well would count it twice, and an FFN map (in + out
    = 1,920 in MiniLM) would need 6.25x an attention map's (768) raw score to be chosen instead of 2.5x."""
    return importance * (math.log1p(nxt) - math.log1p(rank)) / (nxt - rank)


def greedy_ranks(importance: dict[Key, float], keys: list[Key], levels: list[int],
                 fits, start: dict[Key, int] | None = None) -> dict[Key, int]:
    """Raise ranks through `levels` (ascending) in order of `step_priority` (importance gained per byte),
    accepting each step that `fits(ranks)`; a rejected matrix stops."""
    ranks = {k: 0 for k in keys} | dict(start or {})
    steps = [lv for lv in levels if lv > 0]

    def push(heap, key):
        above = [lv for lv in steps if lv > ranks[key]]
        if above:
            nxt = above[0]
            heapq.heappush(heap, (-step_priority(importance[key], ranks[key], nxt), key, nxt))

    heap: list = []
    for key in keys:
        push(heap, key)
    while heap:
        _, key, nxt = heapq.heappop(heap)
        trial = ranks | {key: nxt}
        if fits(trial):
            ranks = trial
            push(heap, key)
    return ranks


class HSplitLoRA(Strategy):
    settings = HSplitLoRASpec

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.matrices = tuple(self.spec.targets or self.arch.matrices)
        self.column = {m: j for j, m in enumerate(self.arch.matrices)}
        self.levels = sorted(set(self.spec.ranks) | {0})
        self.importance = Importance(self.arch, self.spec.beta, self.matrices)
        probe = self.spec.importance_iterations if self.spec.rank_rule == "importance" else 0  # uniform: no IWI
        self.capabilities = (SharedServerSet(),
                             FreshAdapters(keep_optimizer=self.spec.optimizer_on_restart == "keep"),
                             *((ImportanceCalibration(probe),) if probe else ()))
        self.weakest_gb = math.inf  # the fleet's smallest budget (split_objective: weakest)
        self.reference: dict[Key, float] | None = None  # the importance the current configuration was built on
        self.assignment: Assignment | None = None
        self.server_ranks: dict[Key, int] = {}  # the shared server-side set (blocks 2..L can be on the server)
        self.fleet_id: int | None = None
        self.reconfigurations: list[int] = []

    # -- configuration ---------------------------------------------------------------------------------
    def configure(self, round_: int, fleet: Fleet) -> Assignment:
        current = self.importance.snapshot()
        moved = self.reference is None or ranking_distance(current, self.reference) > self.spec.reconfigure_threshold
        if self.assignment is None or moved or self.fleet_id != id(fleet):
            self.assignment = self.configure_all(fleet, current)
            self.reference, self.fleet_id = current, id(fleet)
            self.reconfigurations.append(round_)
        return self.assignment

    def configure_all(self, fleet: Fleet, importance: dict[Key, float]) -> Assignment:
        """ARMSC for every client (clients with the same device figures share one computation)."""
        n = len(fleet)
        self.weakest_gb = float(fleet.memory_gb.min())
        self.server_ranks = self.allocate_server(importance)
        figures = [fleet.flops, fleet.memory_gb, fleet.uplink_mbps, fleet.downlink_mbps, fleet.latency_ms,
                   fleet.mem_gbps, fleet.launch_us]
        if self.durations is not None and self.durations.measured_clients:  # a profile is part of the device
            figures.append(fleet.group.astype(float))
        columns = np.stack(figures, 1)
        unique, inverse = np.unique(columns, axis=0, return_inverse=True)
        configs: list[ClientConfig] = []
        index = np.full(n, -1, dtype=np.int64)
        per_row = []
        for row in unique:
            config = self.configure_client(Device(*map(float, row)), importance, n)
            if config is not None and config not in configs:
                configs.append(config)
            per_row.append(configs.index(config) if config is not None else -1)
        index[:] = np.array(per_row, dtype=np.int64)[inverse.ravel()]
        return Assignment(configs, index)

    def allocate_server(self, importance: dict[Key, float]) -> dict[Key, int]:
        """Ranks of the shared server-side set: greedy by importance per byte under the server's memory, less
        its largest frozen part and one job's activations."""
        frozen = (self.arch.n_layers - 1) * self.arch.block_params + self.arch.head_params
        probe = iteration_cost(self.arch, self.zero_config(1), self.batch, self.seq, self.dtype)
        free = (self.server.memory_gb * GIB - frozen * DTYPE_BYTES[self.dtype] - probe.server_activation_bytes) \
            * self.server.gpus
        keys = [key for key in self.importance.keys if key[0] >= 1]
        per_rank = {key: sum(self.arch.matrix_shape(key[1])) * ADAPTER_BYTES * ADAM_COPIES for key in keys}
        return self.ranks_within(importance, keys, lambda r: sum(per_rank[key] * r[key] for key in keys) <= free)

    def ranks_within(self, importance: dict[Key, float], keys: list[Key], fits) -> dict[Key, int]:
        """Ranks for `keys` under a budget: IWI's greedy rule, or (rank_rule: uniform) the largest level of Q
        that every key can have at once."""
        if self.spec.rank_rule == "importance":
            return greedy_ranks(importance, keys, self.levels, fits)
        for level in sorted(self.levels, reverse=True):
            ranks = dict.fromkeys(keys, level)
            if level == 0 or fits(ranks):
                return ranks
        return dict.fromkeys(keys, 0)

    def zero_config(self, k: int) -> ClientConfig:
        return ClientConfig(k, tuple((0,) * len(self.arch.matrices) for _ in range(self.arch.n_layers)))

    def reference_config(self, k: int) -> ClientConfig:
        """The smallest adapters (least positive rank of Q on every candidate matrix): what latency is estimated
        on, so the backward through adapted blocks counts but the estimate does not depend on the budget."""
        low = min(r for r in self.levels if r > 0)
        return ClientConfig.uniform(self.arch, k, low, self.matrices)

    def latency(self, k: int, device: Device, n_clients: int) -> float:
        """Estimated iteration latency at split k: client compute, both transfers, and the server's time for this
        job times the jobs it competes with (participants per GPU), on `reference_config(k)`. Because that
        configuration is the same for every device, a weaker device (less compute and memory, the same network)
        never gets a deeper split than a stronger one."""
        config = self.reference_config(k)
        cost = iteration_cost(self.arch, config, self.batch, self.seq, self.dtype)
        rates = Rates.of(device.flops, device.mem_gbps, device.launch_us)
        client = sum(Roofline().client(cost, config, rates))
        server = cost.server_flops / self.server.flops
        if self.durations is not None:  # the engine's timing (profiles where the scenario gives them)
            group = None if device.group is None else int(device.group)
            client = sum(self.durations.client(cost, config, group, rates))
            server = self.durations.server(cost, config)
        network = 0.0 if k == self.arch.n_layers else (
            cost.uplink_bytes * 8 / (device.uplink_mbps * 1e6) + cost.downlink_bytes * 8
            / (device.downlink_mbps * 1e6) + 2 * device.latency_ms / 1e3)
        contention = max(1.0, n_clients / self.server.gpus)
        return client + network + server * contention

    def memory(self, k: int, ranks: dict[Key, int]) -> int:
        column = self.column  # arch.matrices is a property: computed once, this is ARMSC's innermost loop
        rows = [[0] * len(column) for _ in range(self.arch.n_layers)]
        for (b, m), r in ranks.items():
            rows[b][column[m]] = r
        config = ClientConfig(k, tuple(tuple(r) for r in rows))
        return iteration_cost(self.arch, config, self.batch, self.seq, self.dtype).client_memory_bytes

    @property
    def deepest_allowed(self) -> int:
        """The drift cap: `max_client_share` of the blocks, at least one."""
        return max(1, math.floor(self.spec.max_client_share * self.arch.n_layers + 1e-9))

    def split_point(self, device: Device, n_clients: int) -> int | None:
        """The feasible split with the lowest latency (ties: the deeper); None when the budget holds none.
        k = L (the whole model on the device, no per-iteration transfers) is a candidate only with
        `allow_federated`: a device that trains alone on its own data drifts under non-iid data."""
        budget = device.memory_gb * GIB
        deepest = min(self.arch.n_layers if self.spec.allow_federated else self.arch.n_layers - 1,
                      self.deepest_allowed)
        feasible = [k for k in range(1, deepest + 1) if self.memory(k, {}) <= budget]
        objective = self.spec.split_objective
        if objective == "budget":
            return feasible[-1] if feasible else None
        if objective == "weakest":  # SplitLoRA's rule: one split for all, the deepest the weakest device holds
            held = [k for k in range(1, deepest + 1) if self.memory(k, {}) <= self.weakest_gb * GIB]
            k = held[-1] if held else 1
            return k if k in feasible else None
        target = self.spec.time_target_s
        if target is not None:
            feasible = [k for k in feasible if self.latency(k, device, n_clients) <= target] or feasible[:1]
        best, best_t = None, math.inf
        for k in feasible:
            t = self.latency(k, device, n_clients)
            if t <= best_t * (1 + 1e-12):
                best, best_t = k, min(t, best_t)
        return best

    def configure_client(self, device: Device, importance: dict[Key, float], n_clients: int) -> ClientConfig | None:
        """The device's split and ranks; the blocks after its split carry the shared server set's ranks."""
        k = self.split_point(device, n_clients)
        if k is None:
            return None
        budget = device.memory_gb * GIB
        client_keys = [key for key in self.importance.keys if key[0] < k]
        ranks = self.ranks_within(importance, client_keys, lambda r: self.memory(k, r) <= budget)
        ranks |= {key: r for key, r in self.server_ranks.items() if key[0] >= k}
        return ClientConfig.from_pattern(self.arch, k, {key: r for key, r in ranks.items() if r})

    def stack_download(self, configs: list[ClientConfig]) -> np.ndarray:
        """What a client split at k downloads of one aggregate: the stacked factors of every matrix on its side
        of the split: per block, the ranks each update trained there on its device, plus the shared server
        set's ranks once if any update left that block to the server (`stack` stacks identical copies once);
        times in + out. Index k holds blocks 0..k-1. Under `aggregator: zero_pad` the merged factors of a
        matrix have the largest rank any update trained on it, not the sum: the download is that."""
        L, matrices = self.arch.n_layers, self.arch.matrices
        combine = np.add if self.spec.aggregator == "naa" else np.maximum
        device_ranks = np.zeros((L, len(matrices)), dtype=np.int64)
        server_ranks = np.zeros((L, len(matrices)), dtype=np.int64)
        for config in configs:
            ranks = np.array(config.ranks, dtype=np.int64)
            k = config.split_point
            device_ranks[:k] = combine(device_ranks[:k], ranks[:k])
            server_ranks[k:] = ranks[k:]  # the shared set: the same ranks in every config that has it
        width = np.array([sum(self.arch.matrix_shape(m)) for m in matrices], dtype=np.int64)
        per_block = (combine(device_ranks, server_ranks) * width).sum(axis=1) * ADAPTER_BYTES
        return np.concatenate([[0], np.cumsum(per_block)]).astype(np.int64)

    # -- training -------------------------------------------------------------------------------------
    def adapter_keys(self, assignment: Assignment) -> set[Key]:
        return set(self.importance.keys)  # configurations change between rounds: every candidate gets a slot

    def global_init(self, assignment: Assignment) -> dict:
        return {}  # adapters start fresh each round; the global model lives in the merged base

    def client_adapters(self, round_: int, client: int, config: ClientConfig, global_factors: dict) -> dict:
        """Fresh adapters for the device's blocks (the server side is the shared set)."""
        ranks = {key: r for key, r in config_ranks(self.arch, config) if key[0] < config.split_point}
        return fresh_adapters(self.arch, ranks, self.alpha, [self.seed, round_, client])

    def server_adapters(self, round_: int) -> dict | None:
        """The shared server-side set for this round, fresh (its previous round was merged)."""
        server_id = 2**31 - 1  # seeds the server's set apart from every client's
        return fresh_adapters(self.arch, dict(self.server_ranks), self.alpha, [self.seed, round_, server_id])

    def aggregate(self, round_: int, trained: list[Trained], current: tuple[dict, dict] = ({}, {})) -> Aggregate:
        """NAA. The shared server copy appears in the trained set of every client that used it; `stack` takes it
        once with their summed weight: its contribution is exactly (sum of their p_i) s B A."""
        merge = stack(trained) if self.spec.aggregator == "naa" else zero_padded_average(trained)
        return Aggregate({}, weighted_head(trained, current[1]), merge=merge)

    def observe_importance(self, round_: int, scores: dict[int, dict[Key, float]], weights: dict[int, float]):
        self.importance.update(round_, scores, weights)

    def importance_rows(self) -> list[dict]:
        return list(self.importance.rows)

    def state_dict(self) -> dict:
        return {"scores": self.importance.snapshot(), "observed": self.importance.observed,
                "rows": list(self.importance.rows), "reference": self.reference, "assignment": self.assignment,
                "reconfigurations": list(self.reconfigurations), "server_ranks": dict(self.server_ranks)}

    def load_state_dict(self, state: dict) -> None:
        self.importance.scores, self.importance.observed = dict(state["scores"]), state["observed"]
        self.importance.rows = list(state["rows"])
        self.reference, self.assignment = state["reference"], state["assignment"]
        self.reconfigurations = list(state["reconfigurations"])
        self.server_ranks = dict(state["server_ranks"])
