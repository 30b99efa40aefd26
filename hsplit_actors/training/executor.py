"""The executor that makes `hsplit run` train for real: the engine's hooks dispatch each phase's computation to
the hosts, in virtual-time order. A session starts with the adapters of the version its client downloaded (or
goes on with its own when no new version came out since: sync rounds between aggregations); at an aggregation
the method folds every update, a delta against the version it started from, into the next version, hosts merge
what the method merges (NAA, FLoRA) into a new base, and the global model is evaluated.

Faults: after every aggregation a recovery point is taken (`recovery.py`) and the hook calls are logged from
there; when a host dies (Ray restarts it empty, or it is gone for good and replaced), every host is restored to
the point and the calls replayed, which gives exactly the results of a run without the fault. Resume: the clock
replays up to the checkpointed aggregation with the recorded metrics, then the recovery point is restored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from hsplit_actors.engine.executor import AggregationStep, Executor
from hsplit_actors.engine.session import Session
from hsplit_actors.methods.aggregate import Trained
from hsplit_actors.methods.base import ImportanceCalibration, SharedServerSet, Strategy
from hsplit_actors.training import recovery
from hsplit_actors.training.checkpoints import save_checkpoint
from hsplit_actors.training.placement import Placement

ATTEMPTS = 3  # recoveries in a row before a fault is given up on


@dataclass(frozen=True)
class ExecutorSettings:
    """What a training run's executor needs besides its hosts: the data's partitions and the starting global
    adapters, how often to evaluate, where checkpoints go, a resume state and the faults to inject."""

    partitions: list[np.ndarray]
    global_init: tuple[dict, dict]  # (factors, head) of version 0
    n_layers: int
    eval_every: int
    metric: str
    checkpoint_dir: str | None = None
    keep_checkpoints: int | None = None
    resume: dict | None = None
    kills: tuple[dict, ...] = ()
    balance_iterations: int = 0  # a session's iterations, when clients move to even out a round (placement.py)


@dataclass
class Start:
    """What the coordinator trains from: each client's rows, the metric, the evaluation set's size and majority
    rate, and the global adapters of version 0. No model and no encoded data: those are the hosts'. Made by the
    host that makes the assets; here, not beside `train`, so that hosts never import pandas and the tables
    (tests/test_run.py)."""

    partitions: list[np.ndarray]
    metric: str
    baseline: dict
    factors: dict
    head: dict
    warnings: list = field(default_factory=list)  # the data's, where another process made it (Ray): raised again


class TrainingExecutor(Executor):
    def __init__(self, runtime, client_hosts: list, server, strategy: Strategy, settings: ExecutorSettings):
        self.rt, self.client_hosts, self.server, self.strategy = runtime, client_hosts, server, strategy
        self.partitions = settings.partitions
        self.factors, self.head = global_init = settings.global_init
        self.n_layers, self.eval_every, self.metric = settings.n_layers, settings.eval_every, settings.metric
        self.checkpoint_dir, self.keep_checkpoints = settings.checkpoint_dir, settings.keep_checkpoints
        resume = self.resume = settings.resume
        self.version = 0
        self.global_at: dict[int, tuple[dict, dict]] = {0: global_init}  # versions sessions still compute on
        self.loaded: dict[int, tuple] = {}  # client -> (version, configuration) on its host
        self.split_point: dict[int, int] = {}
        self.forward_out: dict[int, object] = {}
        self.gradients: dict[int, object] = {}
        self.last_step: dict[int, object] = {}  # each client's latest backward result: its next forward's input
        self.steps: list = []  # backward results since the last aggregation: what it waits for
        self.losses: list = []
        self.registered: set[int] = set()
        self.calls: list[tuple] = []  # hook calls since the last recovery point, for replay after a fault
        self.known = recovery.RecoveryPoint()  # the last captured state of each client
        self.saved: recovery.RecoveryPoint | None = None  # the last recovery point
        self.changed: set[int] = set()  # clients whose state changed since the last capture
        self.merges: list = []  # (version, aggregate) folded into the base so far (low-rank), in order
        self.faults: list[dict] = []
        self.live = resume is None  # False while a resume replays the clock up to its checkpoint
        self.kills = [dict(k) for k in settings.kills]
        self.steps_since = 0  # client steps since the last aggregation (fault injection counts them)
        self.aggregations = 0
        self.metrics: dict[int, dict] = dict(resume["metrics"]) if resume else {}
        self.strategy_states: dict[int, dict] = dict(resume.get("strategy", {})) if resume else {}
        self.checkpoint_round: int | None = None
        probe = strategy.capability(ImportanceCalibration)
        self.calibrate = probe.iterations if probe else 0
        self.shared = strategy.capability(SharedServerSet) is not None  # the server trains one set for all
        self.keep_optimizer = strategy.keeps_optimizer()
        self.peak_global_versions = 1
        self.placement = Placement(len(client_hosts), settings.balance_iterations)

    def host(self, client: int):
        return self.client_hosts[self.placement.where(client)]

    # -- engine hooks, called in virtual-time order ------------------------------------------------------
    def start(self) -> None:
        self._start_version(0)

    def _start_version(self, version: int, redo: tuple | None = None) -> None:
        """A version is out and configured: the shared server set starts (or, for a method that restarts its
        adapters, restarts fresh); then the recovery point (and the checkpoint) of this aggregation. `redo`:
        (reset, aggregate) to run again after a host failure here, so the aggregation is redone on the
        recovered hosts, as the method was before it."""
        if not self.live:
            if version == self.resume["version"]:
                recovery.restore(self, self.resume["state"])
                self.saved, self.live = self.resume["state"], True
                self.aggregations = len([m for m in self.metrics if m <= version])
            return
        fresh = self.strategy.server_adapters(version) if self.shared else None

        def publish() -> None:
            if self.shared and (version == 0 or fresh is not None):
                factors = self.factors if fresh is None else fresh
                self.rt.get(self.rt.call(self.server, "load_shared", factors, self.head,
                                         fresh is None or self.keep_optimizer))
            self._inject("capture", self.aggregations - 1)  # the aggregation just done
            self.saved = recovery.capture(self, self.known)

        # after a fault: hosts as at the last recovery point, the steps replayed, then the aggregation again (what
        # it reads from the hosts also resets what they accumulate, IWI's scores)
        reset, again = redo or (None, None)
        self._with_recovery(self.aggregations - 1, publish, reset, again)
        self.calls = []
        if self.checkpoint_dir is not None and self.checkpoint_round is not None:
            save_checkpoint(self.checkpoint_dir, self.checkpoint_round, version, self.saved, self.metrics,
                            self.strategy_states, self.keep_checkpoints)

    def begin_session(self, s: Session, config) -> None:
        if not self.live:
            return
        self.calls.append(("begin_session", s, config))
        c = s.client
        k = self.split_point[c] = config.split_point
        self.changed.add(c)
        self.placement.begin(c)
        if self.loaded.get(c) == (s.version, config):
            return  # no new version since its last session: it goes on with its own adapters and optimiser
        factors_v, head_v = self.global_at[s.version]
        factors = self.strategy.client_adapters(s.number, c, config, factors_v)
        keep = self.keep_optimizer
        regulariser = self.strategy.client_regulariser(c, config)
        indices = None if c in self.registered else self.partitions[c]
        calls = [self.rt.call(self.host(c), "load_client", c, k, indices, factors, head_v, keep, regulariser,
                              s.version)]
        if self.shared:
            calls.append(self.rt.call(self.server, "register", c, k))
        else:
            calls.append(self.rt.call(self.server, "load_client", c, k, factors, head_v, keep))
        # not waited for: the client's next forward depends on its load (client actors run out of order), and a
        # fault shows at the aggregation's wait, where the recovery point is restored and the calls replayed
        self.last_step[c] = calls[0]
        self.steps.extend(calls)
        self.registered.add(c)
        self.loaded[c] = (s.version, config)

    def client_forward(self, s: Session, iteration: int) -> None:
        if not self.live:
            return
        c = s.client
        self.calls.append(("client_forward", s, iteration))
        self.changed.add(c)
        move = self.placement.step(c, iteration)
        if move is not None:  # its whole state goes, after its last step there
            state = self.rt.call(self.client_hosts[move[0]], "emigrate", c, self.last_step.get(c))
            self.last_step[c] = moved = self.rt.call(self.client_hosts[move[1]], "immigrate", c, state)
            self.steps.append(moved)
        self.forward_out[c] = self.rt.call(self.host(c), "forward", c, s.number, iteration,
                                           iteration < self.calibrate, self.last_step.get(c))

    def server_step(self, s: Session, iteration: int) -> None:
        if not self.live:
            return
        c = s.client
        self.calls.append(("server_step", s, iteration))
        grad, loss = self.rt.call(self.server, "step", c, s.number, iteration, self.forward_out.pop(c),
                                  iteration < self.calibrate, returns=2)
        self.gradients[c] = grad
        self.losses.append(loss)

    def server_batch(self, jobs: list) -> None:
        """Jobs the batching server runs together: one call, one forward/backward, one shared-set step; each
        client's gradient comes back as its own result."""
        if not self.live:
            return
        self.calls.append(("server_batch", jobs))
        keys = [(s.client, s.number, iteration) for s, iteration in jobs]
        calibrate = [iteration < self.calibrate for _, iteration in jobs]
        payloads = [self.forward_out.pop(s.client) for s, _ in jobs]
        out = self.rt.call(self.server, "step_batch", keys, calibrate, *payloads, returns=2 * len(jobs))
        for (s, _), grad in zip(jobs, out[:len(jobs)], strict=True):
            self.gradients[s.client] = grad
        self.losses.extend(out[len(jobs):])

    def client_backward(self, s: Session, iteration: int) -> None:
        if not self.live:
            return
        c = s.client
        self.calls.append(("client_backward", s, iteration))
        # with no server step (federated), the forward's result is the dependency that orders backward after it
        result = self.rt.call(self.host(c), "backward", c, s.number, iteration, self.gradients.pop(c, None),
                              iteration < self.calibrate, self.forward_out.pop(c, None))
        if self.split_point[c] == self.n_layers:
            self.losses.append(result)
        self.last_step[c] = result
        self.steps.append(result)
        self.rt.bound(result)
        self.steps_since += 1
        for kill in list(self.kills):
            if (kill.get("at", "step") == "step" and kill["round"] == self.aggregations
                    and kill["after_steps"] == self.steps_since):
                self.kills.remove(kill)
                victim = self.server if kill.get("server") else self.client_hosts[kill["actor"]]
                self.rt.kill(victim, kill.get("restart", True))

    def aggregate(self, step: AggregationStep) -> dict:
        """The one aggregation step: fold, merge, evaluate, publish, start the version and take its recovery
        point. Returns the row's metrics. A host lost anywhere in it (its steps, the exports, a merge, the
        evaluation, the new version's start) restores the last recovery point, replays the steps and
        aggregates again, with what the method had learned before."""
        if not self.live:  # a resume replaying the clock: what it learned then, and the recorded metrics
            self.strategy.load_state_dict(self.resume["strategy"][step.version])
            step.publish()
            self._start_version(step.version)
            return self.resume["metrics"][step.version]
        learned, count = self.strategy.state_dict(), self.aggregations

        def before_the_aggregation() -> None:
            self.strategy.load_state_dict(learned)
            self.aggregations = count

        metrics = self._with_recovery(step.round, lambda: self._aggregate(step),
                                      lambda: self.strategy.load_state_dict(learned))
        step.publish()
        self._start_version(step.version, (before_the_aggregation, lambda: self._aggregate(step)))
        return metrics

    def _aggregate(self, step: AggregationStep) -> dict:
        self.rt.get(self.steps)  # every client step has finished before anything reads the adapters
        losses = [x for x in self.rt.get(self.losses) if x is not None]
        self.steps, self.losses = [], []
        self._inject("export")
        trained = self._trained(step)
        cids = [u.session.client for u in step.updates]
        if self.calibrate:  # the discarded ones' scores are read (which resets them) and forgotten
            scores = self._importance(cids + [s.client for s in step.discarded])
            weights = {c: float(len(self.partitions[c])) for c in cids}
            self.strategy.observe_importance(step.round, {c: v for c, v in scores.items() if c in weights}, weights)
        result = self.strategy.aggregate(step.round, trained, (self.factors, self.head))
        version = step.version
        self.factors, self.head, self.version = result.factors, result.head, version
        live = sorted({s.version for s in step.running} | {version})
        self.global_at[version] = (self.factors, self.head)
        self.global_at = {v: g for v, g in self.global_at.items() if v in live}
        self.peak_global_versions = max(self.peak_global_versions, len(self.global_at))
        if result.merge:  # every host folds the stacked factors into a new base (clients download them)
            self._inject("merge")
            self.rt.get([self.rt.call(h, "merge", result.merge, version, live)
                         for h in self.client_hosts + [self.server]])
            self.merges.append((version, result.merge))
        self.changed |= set(cids)
        metrics = {"train_loss": float(np.mean(losses)) if losses else float("nan")}
        if (self.aggregations + 1) % self.eval_every == 0:
            self._inject("evaluate")
            metrics |= self._evaluate()
        self.aggregations += 1
        self.steps_since = 0
        self.placement.new_round()
        self.metrics[version] = metrics
        self.strategy_states[version] = self.strategy.state_dict()
        self.checkpoint_round = step.round
        return metrics

    def finish(self, rows: list[dict]) -> None:
        """The last version is always evaluated, whatever `eval_every` says (its row gets the metrics)."""
        if not self.live or not self.metrics:
            return
        last = max(self.metrics)
        if "eval_metric" not in self.metrics[last]:
            self.metrics[last] |= self._with_recovery(self.aggregations - 1, self._evaluate)
            for row in rows:
                if row.get("version") == last and row.get("aggregated"):
                    row.update(self.metrics[last])

    def _evaluate(self) -> dict[str, float]:
        scores = self.rt.get(self.rt.call(self.server, "evaluate", self.factors, self.head))
        return {"eval_loss": scores["loss"], "eval_metric": scores[self.metric]}

    # -- faults -----------------------------------------------------------------------------------------
    def _with_recovery(self, round_: int, work, reset=None, redo=None):
        """`work()`, again after each host failure: `reset()` (what the replay must see), the hosts recovered and
        the logged calls replayed, then `redo()` (what came after the recovery point), up to ATTEMPTS times."""
        for attempt in range(ATTEMPTS + 1):
            try:
                return work()
            except self.rt.errors as exc:
                if attempt == ATTEMPTS:
                    raise
                if reset is not None:
                    reset()
                self._recover(round_, exc)
                if redo is not None:
                    redo()
        raise AssertionError("unreachable")

    def _recover(self, round_: int, exc: BaseException) -> None:
        """After a host failure: every host alive again (restarted by Ray, or replaced), restored to the last
        recovery point, and the calls logged since replayed (resubmitted, not waited for)."""
        failed = self._which(exc)  # named before a replacement takes the place of the lost actor
        replaced, self.server = self.rt.revive(self.client_hosts, self.server)
        calls, self.calls = self.calls, []
        recovery.restore(self, self.saved)
        self.steps_since = 0  # the point is an aggregation's: its steps are counted again as they are replayed
        for hook, *args in calls:
            getattr(self, hook)(*args)
        what = type(exc).__name__ + (f"; {', '.join(replaced)} replaced on a live node" if replaced else "")
        self.faults.append({"round": round_, "t": self.clock.now, "actor": failed, "what": what,
                            "restored": f"state after version {self.saved.version}", "replayed_calls": len(calls)})

    def _which(self, exc: BaseException) -> str:
        """The host a failure came from, by the actor ID Ray's error names ('client actor 1', 'the server
        actor'); 'unknown actor' when it names none of them."""
        from hsplit_actors.training.ray_state import actor_id

        names = {actor_id(h): f"client actor {i}" for i, h in enumerate(self.client_hosts)}
        names[actor_id(self.server)] = "the server actor"
        named = [getattr(exc, "actor_id", None), *re.findall(r"actor_id=([0-9a-f]+)", str(exc))]
        return next((names[i] for i in named if i in names), "unknown actor")

    def _inject(self, at: str, round_: int | None = None) -> None:
        """Fault injection outside the client steps (`train.kill_actor` with `at:`) in aggregation `round_` (by
        default the one at hand)."""
        for kill in list(self.kills):
            if kill.get("at", "step") == at and kill["round"] == (self.aggregations if round_ is None else round_):
                self.kills.remove(kill)
                self.rt.kill(self.server if kill.get("server") else self.client_hosts[kill["actor"]],
                             kill.get("restart", True))

    # -- what an aggregation reads ----------------------------------------------------------------------
    def _trained(self, step: AggregationStep) -> list[Trained]:
        """Each update: its client's device-side adapters joined with its server-side ones (its own, SFL-V1; or
        the shared set, which is current and never stale), and the version it is a delta against. The server
        rate scales both here, the one place it is applied; the shared set is never stale (w = 1)."""
        cids = [u.session.client for u in step.updates]
        exports = self.rt.get([self.rt.call(self.client_hosts[h], "export", cs)
                               for h, cs in self.placement.by_host(cids).items()])
        client_side = {c: e for part in exports for c, e in part.items()}
        server_side = self.rt.get(self.rt.call(self.server, "export", cids))
        trained = []
        for u in step.updates:
            s = u.session
            c, k = s.client, self.split_point[s.client]
            factors, head = client_side[c]
            shared: set = set()
            if c in server_side:
                s_factors, s_head = server_side[c]
                server_part = {key: f for key, f in s_factors.items() if key[0] >= k}
                factors, head = factors | server_part, head | s_head
                if self.shared:
                    shared = set(server_part) | set(s_head)
            start = None if s.version == self.version else self.global_at[s.version]
            trained.append(Trained(c, float(len(self.partitions[c])), factors, head, step.server_lr * u.weight,
                                   start, frozenset(shared), step.server_lr))
        return trained

    def _importance(self, cids: list[int]) -> dict[int, dict]:
        """IWI scores per participant: its device's blocks from its host, the rest from the server."""
        parts = self.rt.get([self.rt.call(self.client_hosts[h], "importance", cs)
                             for h, cs in self.placement.by_host(cids).items()])
        parts.append(self.rt.get(self.rt.call(self.server, "importance", cids)))
        scores: dict[int, dict] = {}
        for part in parts:
            for c, s in part.items():
                scores.setdefault(c, {}).update(s)
        return scores



