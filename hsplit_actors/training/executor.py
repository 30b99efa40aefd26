"""The executor that makes `hsplit run` train for real: the engine's hooks dispatch each phase's computation to
the hosts, in virtual-time order. Each round starts with the adapters the method gives every participant; at its
end the method aggregates every copy a participant trained (on the device or on the server), hosts fold a stacked
aggregate into their base where the method merges (NAA, FLoRA), and the global model is evaluated."""

from __future__ import annotations

import numpy as np

from hsplit_actors.engine.executor import Executor
from hsplit_actors.methods.base import Assignment, Strategy, Trained


class TrainingExecutor(Executor):
    """Dispatches each phase's computation; at round ends aggregates, evaluates and checkpoints.

    Fault tolerance: the round's hook calls are logged and the previous round's state is kept; if a client host
    dies mid-round (Ray restarts it empty), every host is restored to that state and the round's calls replayed,
    which gives exactly the results of a run without the fault. Resume: rounds up to `resume.round` replay on the
    clock only, with their recorded metrics, then the checkpointed state is restored and training goes on.
    """

    def __init__(self, runtime, client_hosts: list, server, partitions: list[np.ndarray], strategy: Strategy,
                 global_init, n_layers: int, eval_every: int, metric: str, checkpoint_dir=None,
                 resume: dict | None = None, kills: list | None = None, keep_checkpoints: int | None = None):
        self.rt, self.client_hosts, self.server = runtime, client_hosts, server
        self.partitions, self.strategy = partitions, strategy
        self.factors, self.head = global_init
        self.n_layers, self.eval_every, self.metric = n_layers, eval_every, metric
        self.checkpoint_dir, self.keep_checkpoints = checkpoint_dir, keep_checkpoints
        self.split_point: dict[int, int] = {}
        self.forward_out: dict[int, object] = {}
        self.gradients: dict[int, object] = {}
        self.last_step: dict[int, object] = {}  # each client's latest backward result: its next forward's input
        self.steps: list = []  # this round's backward results: the round-end barrier
        self.losses: list = []
        self.registered: set[int] = set()
        self.calls: list[tuple] = []  # this round's hook calls, for replay after a fault
        self.saved: dict | None = None  # the state after the last aggregation
        self.known: dict = {"clients": {}, "server": {}, "split_points": {}}  # last captured state of each
        self.changed: set[int] = set()  # clients whose state changed since the last capture
        self.merges: list = []  # every aggregate folded into the base so far (low-rank), in order
        self.faults: list[dict] = []
        self.resume = resume
        self.kills = list(kills or [])
        self.steps_this_round = 0
        self.metrics: dict[int, dict] = dict(resume["metrics"]) if resume else {}
        self.strategy_states: dict[int, dict] = dict(resume.get("strategy", {})) if resume else {}
        self.calibrate = strategy.importance_iterations

    def host(self, client: int):
        return self.client_hosts[client % len(self.client_hosts)]

    # -- engine hooks, called in virtual-time order ------------------------------------------------------
    def replaying(self, round_: int) -> bool:
        return self.resume is not None and round_ <= self.resume["round"]

    def begin_round(self, round_: int, assignment: Assignment, participants) -> None:
        self.losses, self.calls, self.steps, self.steps_this_round = [], [], [], 0
        self.last_step.clear()
        if self.replaying(round_):
            return
        calls = []
        keep = not self.strategy.restarts_adapters
        shared = self.strategy.server_adapters(round_) if self.strategy.shared_server else None
        if shared is not None:
            calls.append(self.rt.call(self.server, "load_shared", shared, self.head, keep))
        for c in participants.tolist():
            config = assignment.configs[assignment.index[c]]
            k = self.split_point[c] = config.split_point
            factors = self.strategy.client_adapters(round_, c, config, self.factors)
            regulariser = self.strategy.client_regulariser(c, config)
            indices = None if c in self.registered else self.partitions[c]
            calls.append(self.rt.call(self.host(c), "load_client", c, k, indices, factors, self.head, keep,
                                      regulariser))
            if shared is None:
                calls.append(self.rt.call(self.server, "load_client", c, k, factors, self.head, keep))
            else:
                calls.append(self.rt.call(self.server, "register", c, k))
            self.registered.add(c)
        self.rt.get(calls)
        self.changed |= set(participants.tolist())
        self.saved = self._capture()  # the round's starting state: a fault this round restores exactly this

    def client_forward(self, client: int, round_: int, iteration: int) -> None:
        if self.replaying(round_):
            return
        self.calls.append(("client_forward", client, round_, iteration))
        self.forward_out[client] = self.rt.call(self.host(client), "forward", client, round_, iteration,
                                                iteration < self.calibrate, self.last_step.get(client))

    def server_step(self, client: int, round_: int, iteration: int) -> None:
        if self.replaying(round_):
            return
        self.calls.append(("server_step", client, round_, iteration))
        grad, loss = self.rt.call(self.server, "step", client, round_, iteration, self.forward_out.pop(client),
                                  iteration < self.calibrate, returns=2)
        self.gradients[client] = grad
        self.losses.append(loss)

    def client_backward(self, client: int, round_: int, iteration: int) -> None:
        if self.replaying(round_):
            return
        self.calls.append(("client_backward", client, round_, iteration))
        # with no server step (federated), the forward's result is the dependency that orders backward after it
        result = self.rt.call(self.host(client), "backward", client, round_, iteration,
                              self.gradients.pop(client, None), iteration < self.calibrate,
                              self.forward_out.pop(client, None))
        if self.split_point[client] == self.n_layers:
            self.losses.append(result)
        self.last_step[client] = result
        self.steps.append(result)
        self.rt.bound(result)
        self.steps_this_round += 1
        for kill in list(self.kills):
            if kill["round"] == round_ and kill["after_steps"] == self.steps_this_round:
                self.kills.remove(kill)
                victim = self.server if kill.get("server") else self.client_hosts[kill["actor"]]
                self.rt.kill(victim, kill.get("restart", True))

    # -- faults -----------------------------------------------------------------------------------------
    def _capture(self) -> dict:
        """Everything needed to redo a round: every host's state, the merges and the global adapters. Only the
        clients whose state changed since the last capture are fetched (a round's participants), so the cost
        follows the round, not the fleet. Client states are pooled by client id, so a resume may use a different
        number of client actors."""
        changed = sorted(self.changed)
        parts = self.rt.get([self.rt.call(self.client_hosts[h], "snapshot", cs)
                             for h, cs in self._by_host(changed).items()])
        for part in parts:
            self.known["clients"].update(part)
        server = self.rt.get(self.rt.call(self.server, "snapshot", changed))
        for owner, state in server["states"].items():
            if state is None:
                self.known["server"].pop(owner, None)
            else:
                self.known["server"][owner] = state
        self.known["split_points"] = server["split_points"]
        self.changed.clear()
        return {"clients": dict(self.known["clients"]),
                "server": {"states": dict(self.known["server"]), "split_points": self.known["split_points"]},
                "merges": list(self.merges), "factors": self.factors, "head": self.head}

    def _restore(self, saved: dict) -> None:
        n = len(self.client_hosts)
        calls = [self.rt.call(host, "restore", {c: s for c, s in saved["clients"].items() if c % n == h},
                              saved["merges"])
                 for h, host in enumerate(self.client_hosts)]
        calls.append(self.rt.call(self.server, "restore", saved["server"], saved["merges"]))
        self.rt.get(calls)
        self.known = {"clients": dict(saved["clients"]), "server": dict(saved["server"]["states"]),
                      "split_points": saved["server"]["split_points"]}
        self.changed.clear()
        self.merges = list(saved["merges"])
        self.registered |= set(saved["clients"])
        self.split_point |= {c: s["split_point"] for c, s in saved["clients"].items()}
        self.factors, self.head = saved["factors"], saved["head"]

    def _results_of_round(self, round_: int, attempts: int = 3) -> list:
        """The round's losses; after a host failure, restore the last state and replay the round's calls."""
        for attempt in range(attempts + 1):
            try:
                self.rt.get(self.steps)  # every client step has finished before anything reads the adapters
                return self.rt.get(self.losses)
            except self.rt.errors as exc:
                if attempt == attempts:
                    raise
                replaced, self.server = self.rt.revive(self.client_hosts, self.server)
                calls, self.calls = self.calls, []
                self._restore(self.saved)
                self.losses, self.forward_out, self.gradients, self.steps = [], {}, {}, []
                self.last_step.clear()
                for hook, *args in calls:
                    getattr(self, hook)(*args)
                what = type(exc).__name__ + (f"; {', '.join(replaced)} replaced on a live node" if replaced else "")
                self.faults.append({"round": round_, "t": self.clock.now, "actor": _which(exc), "what": what,
                                    "restored": f"state after round {round_ - 1}", "replayed_calls": len(calls)})
        raise AssertionError("unreachable")

    def aggregate(self, round_: int, participants) -> dict[str, float]:
        if self.replaying(round_):
            self.strategy.load_state_dict(self.resume["strategy"][round_])  # what it learned in that round
            if round_ == self.resume["round"]:
                self._restore(self.resume["state"])
            return self.resume["metrics"][round_]
        cids = [int(c) for c in participants]
        losses = [x for x in self._results_of_round(round_) if x is not None]
        self.changed |= set(cids)  # they trained
        trained = self._trained(cids)
        weights = {c: float(len(self.partitions[c])) for c in cids}
        if self.calibrate:
            self.strategy.observe_importance(round_, self._importance(cids), weights)
        result = self.strategy.aggregate(round_, trained)
        self.factors, self.head = result.factors, result.head
        if result.merge:  # every host folds the stacked factors into its base (participants download them)
            self.rt.get([self.rt.call(h, "merge", result.merge) for h in self.client_hosts + [self.server]])
            self.merges.append(result.merge)
        metrics = {"train_loss": float(np.mean(losses)) if losses else float("nan")}
        if (round_ + 1) % self.eval_every == 0:
            scores = self.rt.get(self.rt.call(self.server, "evaluate", self.factors, self.head))
            metrics["eval_loss"] = scores["loss"]
            metrics["eval_metric"] = scores[self.metric]
        self.metrics[round_] = metrics
        self.strategy_states[round_] = self.strategy.state_dict()
        if self.checkpoint_dir is not None:
            save_checkpoint(self.checkpoint_dir, round_, self._capture(), self.metrics, self.strategy_states,
                            self.keep_checkpoints)
        return metrics

    def _by_host(self, cids: list[int]) -> dict[int, list[int]]:
        by_host: dict[int, list[int]] = {}
        for c in cids:
            by_host.setdefault(c % len(self.client_hosts), []).append(c)
        return by_host

    def _trained(self, cids: list[int]) -> list[Trained]:
        """Each participant's trained copy: its device-side adapters joined with its server-side ones."""
        exports = self.rt.get([self.rt.call(self.client_hosts[h], "export", cs)
                               for h, cs in self._by_host(cids).items()])
        client_side = {c: e for part in exports for c, e in part.items()}
        server_side = self.rt.get(self.rt.call(self.server, "export", cids))
        trained = []
        for c in cids:
            factors, head = client_side[c]
            if c in server_side:
                s_factors, s_head = server_side[c]
                factors = factors | {key: f for key, f in s_factors.items() if key[0] >= self.split_point[c]}
                head = head | s_head
            trained.append(Trained(c, float(len(self.partitions[c])), factors, head))
        return trained

    def _importance(self, cids: list[int]) -> dict[int, dict]:
        """IWI scores per participant: its device's blocks from its host, the rest from the server."""
        parts = self.rt.get([self.rt.call(self.client_hosts[h], "importance", cs)
                             for h, cs in self._by_host(cids).items()])
        parts.append(self.rt.get(self.rt.call(self.server, "importance", cids)))
        scores: dict[int, dict] = {}
        for part in parts:
            for c, s in part.items():
                scores.setdefault(c, {}).update(s)
        return scores


def _which(exc: Exception) -> str:
    text = str(exc)
    return text.split("actor_id=")[1].split(",")[0][:16] if "actor_id=" in text else type(exc).__name__


def save_checkpoint(directory, round_: int, state: dict, metrics: dict, strategy: dict,
                    keep: int | None = None) -> None:
    """`checkpoints/round_NNNN.pt`, written atomically; the newest one is what --resume continues from. It holds
    the hosts' state, every round's metrics and what the strategy had learned after each round. With `keep`,
    only the newest `keep` files stay (each holds the whole run so far; older ones are only history)."""
    from pathlib import Path

    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".round_{round_:04d}.pt.tmp"
    torch.save({"round": round_, "state": state, "metrics": dict(metrics), "strategy": dict(strategy)}, tmp)
    tmp.rename(directory / f"round_{round_:04d}.pt")
    if keep is not None:
        for old in sorted(directory.glob("round_*.pt"))[:-keep]:
            old.unlink()


def load_checkpoint(directory) -> dict | None:
    from pathlib import Path

    import torch

    files = sorted(Path(directory).glob("round_*.pt"))
    return torch.load(files[-1], weights_only=False, map_location="cpu") if files else None
