"""The executor that makes `hsplit run` train for real: the engine's hooks dispatch each phase's computation to
the hosts, in virtual-time order, and the round's end aggregates adapters (FedAvg per matrix, over every copy a
participant trained, on the device or on the server) and evaluates the global model."""

from __future__ import annotations

import numpy as np
import torch

from hsplit_actors.engine.executor import Executor
from hsplit_actors.methods.base import Assignment
from hsplit_actors.model.lora import Key, LoRAFactors
from hsplit_actors.training.hosts import Factors


def fedavg(sets: list[tuple[Factors, dict[str, torch.Tensor]]], weights: list[float]):
    """Per matrix, the data-weighted mean of A and of B over the sets that hold it (equal ranks required)."""
    factors: dict[Key, LoRAFactors] = {}
    keys = {k for s, _ in sets for k in s}
    for key in sorted(keys):
        holders = [(s[key], w) for (s, _), w in zip(sets, weights, strict=True) if key in s]
        ranks = {f.rank for f, _ in holders}
        if len(ranks) > 1:
            raise ValueError(f"FedAvg of block {key[0]} {key[1]} needs one rank, got {sorted(ranks)}")
        total = sum(w for _, w in holders)
        factors[key] = LoRAFactors(sum(w * f.A for f, w in holders) / total, sum(w * f.B for f, w in holders) / total,
                                   holders[0][0].alpha)
    head: dict[str, torch.Tensor] = {}
    names = {n for _, h in sets for n in h}
    for name in names:
        holders = [(h[name], w) for (_, h), w in zip(sets, weights, strict=True) if name in h]
        head[name] = sum(w * t for t, w in holders) / sum(w for _, w in holders)
    return factors, head


class TrainingExecutor(Executor):
    def __init__(self, runtime, client_hosts: list, server, partitions: list[np.ndarray], global_init,
                 n_layers: int, eval_every: int, metric: str, checkpoint=None):
        self.rt, self.client_hosts, self.server = runtime, client_hosts, server
        self.partitions = partitions
        self.factors, self.head = global_init
        self.n_layers, self.eval_every, self.metric = n_layers, eval_every, metric
        self.checkpoint = checkpoint
        self.split_point: dict[int, int] = {}
        self.forward_out: dict[int, object] = {}
        self.gradients: dict[int, object] = {}
        self.losses: list = []
        self.registered: set[int] = set()

    def host(self, client: int):
        return self.client_hosts[client % len(self.client_hosts)]

    # -- engine hooks, called in virtual-time order ------------------------------------------------------
    def begin_round(self, round_: int, assignment: Assignment, participants) -> None:
        calls = []
        for c in participants.tolist():
            k = assignment.configs[assignment.index[c]].split_point
            if c in self.registered and self.split_point[c] != k:
                raise NotImplementedError("changing a client's split point between rounds needs adaptive "
                                          "reconfiguration (HSplitLoRA), not FedAvg")
            if c not in self.registered:
                self.split_point[c] = k
                calls.append(self.rt.call(self.host(c), "add_client", c, k, self.partitions[c], self.factors,
                                          self.head))
                calls.append(self.rt.call(self.server, "add_client", c, k, self.factors, self.head))
                self.registered.add(c)
        self.rt.get(calls)
        self.losses = []

    def client_forward(self, client: int, round_: int, iteration: int) -> None:
        self.forward_out[client] = self.rt.call(self.host(client), "forward", client, round_, iteration)

    def server_step(self, client: int, round_: int, iteration: int) -> None:
        grad, loss = self.rt.call(self.server, "step", client, round_, iteration, self.forward_out.pop(client),
                                  returns=2)
        self.gradients[client] = grad
        self.losses.append(loss)

    def client_backward(self, client: int, round_: int, iteration: int) -> None:
        result = self.rt.call(self.host(client), "backward", client, round_, iteration,
                              self.gradients.pop(client, None))
        self.forward_out.pop(client, None)
        if self.split_point[client] == self.n_layers:
            self.losses.append(result)
        self.rt.bound(result)

    def aggregate(self, round_: int, participants) -> dict[str, float]:
        cids = [int(c) for c in participants]
        losses = [x for x in self.rt.get(self.losses) if x is not None]
        by_host: dict[int, list[int]] = {}
        for c in cids:
            by_host.setdefault(c % len(self.client_hosts), []).append(c)
        exports = self.rt.get([self.rt.call(self.client_hosts[h], "export", cs) for h, cs in by_host.items()])
        client_side = {c: e for part in exports for c, e in part.items()}
        server_side = self.rt.get(self.rt.call(self.server, "export", cids))
        sets, weights = [], []
        for c in cids:
            factors, head = client_side[c]
            if c in server_side:
                s_factors, s_head = server_side[c]
                k = self.split_point[c]
                factors = factors | {key: f for key, f in s_factors.items() if key[0] >= k}
                head = head | s_head
            sets.append((factors, head))
            weights.append(float(len(self.partitions[c])))
        self.factors, self.head = fedavg(sets, weights)
        everyone = sorted(self.registered)
        calls = [self.rt.call(host, "assign", [c for c in everyone if c % len(self.client_hosts) == h],
                              self.factors, self.head) for h, host in enumerate(self.client_hosts)]
        calls.append(self.rt.call(self.server, "assign", everyone, self.factors, self.head))
        self.rt.get(calls)
        metrics = {"train_loss": float(np.mean(losses)) if losses else float("nan")}
        if (round_ + 1) % self.eval_every == 0:
            result = self.rt.get(self.rt.call(self.server, "evaluate", self.factors, self.head))
            metrics["eval_loss"] = result["loss"]
            metrics["eval_metric"] = result[self.metric]
        if self.checkpoint is not None:
            self.checkpoint(round_, self)
        return metrics
