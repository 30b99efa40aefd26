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
    """Dispatches each phase's computation; at round ends aggregates, evaluates and checkpoints.

    Fault tolerance: the round's hook calls are logged and the previous round's state is kept; if a client host
    dies mid-round (Ray restarts it empty), every host is restored to that state and the round's calls replayed,
    which gives exactly the results of a run without the fault. Resume: rounds up to `resume.round` replay on the
    clock only, with their recorded metrics, then the checkpointed state is restored and training goes on.
    """

    def __init__(self, runtime, client_hosts: list, server, partitions: list[np.ndarray], global_init,
                 n_layers: int, eval_every: int, metric: str, checkpoint_dir=None, resume: dict | None = None,
                 kills: list | None = None):
        self.rt, self.client_hosts, self.server = runtime, client_hosts, server
        self.partitions = partitions
        self.factors, self.head = global_init
        self.n_layers, self.eval_every, self.metric = n_layers, eval_every, metric
        self.checkpoint_dir = checkpoint_dir
        self.split_point: dict[int, int] = {}
        self.forward_out: dict[int, object] = {}
        self.gradients: dict[int, object] = {}
        self.losses: list = []
        self.registered: set[int] = set()
        self.calls: list[tuple] = []  # this round's hook calls, for replay after a fault
        self.saved: dict | None = None  # the state after the last aggregation
        self.faults: list[dict] = []
        self.resume = resume
        self.kills = list(kills or [])
        self.steps_this_round = 0
        self.metrics: dict[int, dict] = dict(resume["metrics"]) if resume else {}

    def host(self, client: int):
        return self.client_hosts[client % len(self.client_hosts)]

    # -- engine hooks, called in virtual-time order ------------------------------------------------------
    def replaying(self, round_: int) -> bool:
        return self.resume is not None and round_ <= self.resume["round"]

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
        self.losses, self.calls, self.steps_this_round = [], [], 0
        if not self.replaying(round_):
            self.saved = self._capture()  # after registration: a fault this round restores exactly this

    def client_forward(self, client: int, round_: int, iteration: int) -> None:
        if self.replaying(round_):
            return
        self.calls.append(("client_forward", client, round_, iteration))
        self.forward_out[client] = self.rt.call(self.host(client), "forward", client, round_, iteration)

    def server_step(self, client: int, round_: int, iteration: int) -> None:
        if self.replaying(round_):
            return
        self.calls.append(("server_step", client, round_, iteration))
        grad, loss = self.rt.call(self.server, "step", client, round_, iteration, self.forward_out.pop(client),
                                  returns=2)
        self.gradients[client] = grad
        self.losses.append(loss)

    def client_backward(self, client: int, round_: int, iteration: int) -> None:
        if self.replaying(round_):
            return
        self.calls.append(("client_backward", client, round_, iteration))
        result = self.rt.call(self.host(client), "backward", client, round_, iteration,
                              self.gradients.pop(client, None))
        self.forward_out.pop(client, None)
        if self.split_point[client] == self.n_layers:
            self.losses.append(result)
        self.rt.bound(result)
        self.steps_this_round += 1
        for kill in list(self.kills):
            if kill["round"] == round_ and kill["after_steps"] == self.steps_this_round:
                self.kills.remove(kill)
                self.rt.kill(self.client_hosts[kill["actor"]])

    # -- faults -----------------------------------------------------------------------------------------
    def _capture(self) -> dict:
        """Everything needed to redo a round: every host's state and the global adapters."""
        return {"clients": self.rt.get([self.rt.call(h, "snapshot") for h in self.client_hosts]),
                "server": self.rt.get(self.rt.call(self.server, "snapshot")),
                "factors": self.factors, "head": self.head}

    def _restore(self, saved: dict) -> None:
        for h, host in enumerate(self.client_hosts):
            mine = [c for c in sorted(self.registered) if c % len(self.client_hosts) == h]
            known = self.rt.get(self.rt.call(host, "client_ids"))
            calls = [self.rt.call(host, "add_client", c, self.split_point[c], self.partitions[c], saved["factors"],
                                  saved["head"]) for c in mine if c not in known]
            self.rt.get(calls)
            self.rt.get(self.rt.call(host, "restore", {c: s for c, s in saved["clients"][h].items() if c in mine}))
        self.rt.get(self.rt.call(self.server, "restore", saved["server"]))
        self.factors, self.head = saved["factors"], saved["head"]

    def _results_of_round(self, round_: int, attempts: int = 3) -> list:
        """The round's losses; after a host failure, restore the last state and replay the round's calls."""
        for attempt in range(attempts + 1):
            try:
                return self.rt.get(self.losses)
            except self.rt.errors as exc:
                if attempt == attempts:
                    raise
                self.rt.wait_until_alive(self.client_hosts + [self.server])
                calls, self.calls = self.calls, []
                self._restore(self.saved)
                self.losses, self.forward_out, self.gradients = [], {}, {}
                for hook, *args in calls:
                    getattr(self, hook)(*args)
                self.faults.append({"round": round_, "t": self.clock.now, "actor": _which(exc),
                                    "what": type(exc).__name__, "restored": f"state after round {round_ - 1}",
                                    "replayed_calls": len(calls)})
        raise AssertionError("unreachable")

    def aggregate(self, round_: int, participants) -> dict[str, float]:
        if self.replaying(round_):
            if round_ == self.resume["round"]:
                self._restore(self.resume["state"])
            return self.resume["metrics"][round_]
        cids = [int(c) for c in participants]
        losses = [x for x in self._results_of_round(round_) if x is not None]
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
        self.metrics[round_] = metrics
        if self.checkpoint_dir is not None:
            save_checkpoint(self.checkpoint_dir, round_, self._capture(), self.metrics)
        return metrics


def _which(exc: Exception) -> str:
    text = str(exc)
    return text.split("actor_id=")[1].split(",")[0][:16] if "actor_id=" in text else type(exc).__name__


def save_checkpoint(directory, round_: int, state: dict, metrics: dict) -> None:
    """`checkpoints/round_NNNN.pt`, written atomically; the newest one is what --resume continues from."""
    from pathlib import Path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".round_{round_:04d}.pt.tmp"
    torch.save({"round": round_, "state": state, "metrics": dict(metrics)}, tmp)
    tmp.rename(directory / f"round_{round_:04d}.pt")


def load_checkpoint(directory) -> dict | None:
    from pathlib import Path

    files = sorted(Path(directory).glob("round_*.pt"))
    return torch.load(files[-1], weights_only=False, map_location="cpu") if files else None
