"""The SimPy processes of SPEC §1. A coordinator process runs the rounds; each participating client runs one
generator per round through client_fwd -> uplink -> queue -> server -> downlink -> client_bwd, S times, then
uploads its adapters, waits for the aggregate and downloads it. Durations come from the cost model only, so a
seeded run is deterministic.

Recording is columnar (`array`), one row per iteration with its seven phase boundaries; the events table is
expanded from it afterwards (phases are contiguous), which keeps the hot loop to two appends per iteration.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import simpy

from hsplit_actors.costmodel import ClientConfig, IterationCost, ModelArch
from hsplit_actors.costmodel.costs import ADAPTER_BYTES
from hsplit_actors.engine.executor import Executor, TimingExecutor
from hsplit_actors.engine.server import GPUPool
from hsplit_actors.fleet import Fleet
from hsplit_actors.fleet.devices import load_catalogue
from hsplit_actors.methods.base import Strategy
from hsplit_actors.scenario.schema import Scenario

PHASES = ("client_fwd", "uplink", "queue", "server", "downlink", "client_bwd")
OTHER_PHASES = ("agg_up", "aggregate", "agg_down", "dropout")
AGG_UP, AGGREGATE, AGG_DOWN, DROPOUT = range(len(PHASES), len(PHASES) + len(OTHER_PHASES))
ALL_PHASES = PHASES + OTHER_PHASES
FED_SERVER = -1  # `client` of the aggregation event


class Barrier:
    """Fires its event once `n` arrivals have been counted (cheaper than all_of over thousands of processes)."""

    def __init__(self, env: simpy.Environment, n: int):
        self.n, self.event = n, env.event()
        if n == 0:
            self.event.succeed()

    def arrive(self) -> None:
        self.n -= 1
        if self.n == 0:
            self.event.succeed()


@dataclass(frozen=True)
class Progress:
    """Where a run stands, for a progress bar: the round and how much of it is done (its participants'
    iterations, so a round of few participants still fills), the virtual time, and the last finished round's
    known metrics (train_loss of the last round, eval_loss / eval_metric of the last evaluation; empty in `plan`)."""

    round: int  # 0-based, the round in progress (or just finished)
    rounds: int
    round_done: float  # 0..1
    steps: int  # client iterations dispatched so far, all rounds
    t: float
    last: dict[str, float] = field(default_factory=dict)
    metric: str = ""  # what last["eval_metric"] measures

    @property
    def completed(self) -> float:
        """Rounds done, fractional: what a bar of `rounds` steps shows."""
        return self.round + self.round_done


ProgressCallback = Callable[[Progress], None]


@dataclass
class SimulationLog:
    """Everything a run records; `tables.py` turns it into the events / rounds / clients tables."""

    configs: list[ClientConfig] = field(default_factory=list)
    costs: list[IterationCost] = field(default_factory=list)
    iter_ints: array = field(default_factory=lambda: array("q"))  # client, round, iteration, config, queue_len
    iter_times: array = field(default_factory=lambda: array("d"))  # t0..t6: boundaries of the six phases
    other_ints: array = field(default_factory=lambda: array("q"))  # client, round, phase, bytes
    other_floats: array = field(default_factory=lambda: array("d"))  # t_start, t_end, flops
    rounds: list[dict] = field(default_factory=list)
    client_config: np.ndarray | None = None  # last configuration id per client (-1: never feasible)
    server_busy_s: float = 0.0
    gpus: int = 1


class Simulation:
    """One run of a scenario on the virtual clock. `executor` decides whether anything is really computed."""

    def __init__(self, scenario: Scenario, arch: ModelArch, fleet: Fleet, strategy: Strategy,
                 executor: Executor | None = None, on_progress: ProgressCallback | None = None):
        self.scenario, self.arch, self.fleet, self.strategy = scenario, arch, fleet, strategy
        self.executor = executor or TimingExecutor()
        self.env = simpy.Environment()
        self.executor.attach(self.env)
        _, servers = load_catalogue()
        profile = servers[scenario.server.profile]
        self.server_flops = float(scenario.server.flops or profile.flops)
        self.gpus = GPUPool(self.env, scenario.server.gpus)
        self.log = SimulationLog(client_config=np.full(len(fleet), -1, dtype=np.int64), gpus=scenario.server.gpus)
        self._config_ids: dict[ClientConfig, int] = {}
        self.has_windows = [fleet.windows[g] is not None for g in fleet.group]
        # Plain Python floats: numpy scalars would leak into the clock and make every SimPy heap step slower.
        self.device = {f: getattr(fleet, f).tolist() for f in ("flops", "latency_ms", "uplink_mbps",
                                                                 "downlink_mbps", "priority")}
        self.on_progress = on_progress
        self.done = 0
        self.next_tick = 0
        self.tick_every = 1
        self.round_done, self.round_steps = 0, 1
        self.last: dict[str, float] = {}

    # -- the rounds -------------------------------------------------------------------------------------------
    def run(self) -> SimulationLog:
        self.env.process(self.coordinator())
        self.env.run()
        self.log.server_busy_s = self.gpus.busy_s
        return self.log

    def coordinator(self):
        sc, env, strategy = self.scenario, self.env, self.strategy
        for rnd in range(sc.rounds):
            t_start, wall_start = env.now, time.perf_counter()
            assignment = strategy.configure(rnd, self.fleet)
            ids = np.array([self._config_id(c) for c in assignment.configs] + [-1], dtype=np.int64)
            global_index = ids[assignment.index]  # -1 stays -1 (the appended sentinel)
            feasible = global_index >= 0
            self.log.client_config[feasible] = global_index[feasible]
            participants = self.participants(rnd, feasible)
            self.executor.begin_round(rnd, assignment, participants)
            aggregate = (rnd + 1) % sc.aggregation_interval == 0 or rnd == sc.rounds - 1
            up_bytes, _ = strategy.aggregation_payload(assignment, participants)
            self.uploaded = Barrier(env, len(participants))
            self.aggregated = env.event()
            self.uploaders: list[int] = []
            self.tick_every = max(1, len(participants) * sc.local_iterations // 200)
            self.round_done, self.round_steps = 0, max(1, len(participants) * sc.local_iterations)
            for c, up in zip(participants.tolist(), up_bytes.tolist(), strict=True):
                env.process(self.client_round(c, rnd, int(global_index[c]), up if aggregate else None))
            yield self.uploaded.event
            metrics: dict[str, float] = {}
            if self.uploaders:
                uploaders = np.array(sorted(self.uploaders), dtype=np.int64)
                up, down = strategy.aggregation_payload(assignment, uploaders)
                self.down_bytes = dict(zip(uploaders.tolist(), down.tolist(), strict=True))
                t0 = env.now
                flops = 2.0 * float(up.sum()) / ADAPTER_BYTES  # a weighted sum over every uploaded parameter
                if flops:  # centralised training aggregates nothing: no event, but the round still ends here
                    yield env.timeout(flops / self.server_flops)
                    self._record(FED_SERVER, rnd, AGGREGATE, t0, env.now, 0, flops)
                metrics = self.executor.aggregate(rnd, uploaders)
                self.downloaded = Barrier(env, len(uploaders))
                self.aggregated.succeed()
                yield self.downloaded.event
            self.log.rounds.append({
                "round": rnd, "t_start": t_start, "t_end": env.now, "wall_s": time.perf_counter() - wall_start,
                "participants": int(len(participants)), "infeasible": int((~feasible).sum()),
                "aggregated": bool(self.uploaders), **metrics,
            })
            if self.on_progress is not None:
                self.last = self.last | {k: v for k, v in metrics.items() if v == v}  # the latest of each
                self.round_done = self.round_steps
                self._report(rnd)

    def _report(self, rnd: int) -> None:
        self.on_progress(Progress(rnd, self.scenario.rounds, min(1.0, self.round_done / self.round_steps),
                                  self.done, self.env.now, dict(self.last), self.executor.metric))

    def participants(self, rnd: int, feasible: np.ndarray) -> np.ndarray:
        """Feasible clients that take part this round: per-round availability draw, on-line now."""
        rng = np.random.default_rng([self.scenario.seed, rnd])
        take_part = feasible & (rng.random(len(self.fleet)) < self.fleet.participation)
        for g in range(len(self.fleet.windows)):
            if not self.fleet.group_online(g, self.env.now):
                take_part &= self.fleet.group != g
        return np.flatnonzero(take_part)

    # -- one client, one round: SPEC §1 top to bottom ------------------------------------------------------
    def client_round(self, c: int, rnd: int, config_id: int, agg_up_bytes: int | None):
        """`agg_up_bytes` None: no aggregation this round; 0: aggregated without a transfer (centralised)."""
        env, timeout, ex, gpus = self.env, self.env.timeout, self.executor, self.gpus
        fleet, dev = self.fleet, self.device
        cost = self.log.costs[config_id]
        k, n_layers = self.log.configs[config_id].split_point, self.arch.n_layers
        on_device, uses_server, split = k > 0, k < n_layers, 0 < k < n_layers
        flops, lat = dev["flops"][c], dev["latency_ms"][c] / 1e3
        up_bps, down_bps = dev["uplink_mbps"][c] * 1e6, dev["downlink_mbps"][c] * 1e6
        t_fwd, t_bwd = cost.client_fwd_flops / flops, cost.client_bwd_flops / flops
        t_up, t_down = cost.uplink_bytes * 8 / up_bps + lat, cost.downlink_bytes * 8 / down_bps + lat
        t_srv = cost.server_flops / self.server_flops
        discipline = self.scenario.server.queue
        key = 0.0 if discipline == "fifo" else (t_srv if discipline == "sjf" else float(dev["priority"][c]))
        watch = self.has_windows[c]
        real = not isinstance(ex, TimingExecutor)  # plan: skip three no-op calls per iteration
        progress = self.on_progress
        ints, times = self.log.iter_ints, self.log.iter_times
        for it in range(self.scenario.local_iterations):
            if watch and not fleet.online(c, env.now):
                self._record(c, rnd, DROPOUT, env.now, env.now, 0, 0.0)
                self.uploaded.arrive()
                return
            t0 = env.now
            if real:
                ex.client_forward(c, rnd, it)
            if on_device:
                yield timeout(t_fwd)
            t1 = t2 = t3 = t4 = t5 = env.now
            queue_len = 0
            if uses_server:
                if split:
                    yield timeout(t_up)
                    t2 = env.now
                queue_len = len(gpus)
                yield gpus.request(key)
                t3 = env.now
                if real:
                    ex.server_step(c, rnd, it)
                yield timeout(t_srv)
                gpus.release(t_srv)
                t4 = t5 = env.now
                if split:
                    yield timeout(t_down)
                    t5 = env.now
            if real:
                ex.client_backward(c, rnd, it)
            if on_device:
                yield timeout(t_bwd)
            times.extend((t0, t1, t2, t3, t4, t5, env.now))
            ints.extend((c, rnd, it, config_id, queue_len))
            if progress is not None:
                self.done += 1
                self.round_done += 1
                if self.done >= self.next_tick:
                    self.next_tick = self.done + self.tick_every
                    self._report(rnd)
        if agg_up_bytes is None:
            self.uploaded.arrive()
            return
        if agg_up_bytes:
            t0 = env.now
            yield timeout(agg_up_bytes * 8 / up_bps + lat)
            self._record(c, rnd, AGG_UP, t0, env.now, agg_up_bytes, 0.0)
        self.uploaders.append(c)
        self.uploaded.arrive()
        yield self.aggregated
        down = self.down_bytes[c]
        if down:
            t0 = env.now
            yield timeout(down * 8 / down_bps + lat)
            self._record(c, rnd, AGG_DOWN, t0, env.now, down, 0.0)
        self.downloaded.arrive()

    # -- bookkeeping ----------------------------------------------------------------------------------------
    def _config_id(self, config: ClientConfig) -> int:
        if config not in self._config_ids:
            self._config_ids[config] = len(self.log.configs)
            self.log.configs.append(config)
            self.log.costs.append(self.strategy.cost(config))
        return self._config_ids[config]

    def _record(self, c: int, rnd: int, phase: int, t0: float, t1: float, nbytes: int, flops: float) -> None:
        self.log.other_ints.extend((c, rnd, phase, nbytes))
        self.log.other_floats.extend((t0, t1, flops))
