"""The SimPy processes of SPEC §1 and §9. A client's work is a *session*: download the global version it lacks,
run S local iterations through client_fwd -> uplink -> queue -> server -> downlink -> client_bwd, upload its
update into the upload buffer (a `simpy.Store`). One aggregation process (`aggregation.py`) decides when to
draw clients and when to aggregate what the buffer holds: sync rounds, semi-sync deadlines or FedBuff's async
buffer. Durations come from the cost model or a measured profile (`durations.py`), never from the wall clock, so
a seeded run is deterministic.

Recording is columnar (`array`), one row per iteration with its seven phase boundaries; the events table is
expanded from it afterwards (phases are contiguous), which keeps the hot loop to two appends per iteration.

Speed at a million clients is the number of heap events per client-iteration: phases nothing can interrupt are
one event (`Clock.at` lands it on the exact instant), a FIFO server's start is reserved on arrival rather than
waited for, and in `plan`, where no session is ever stopped mid-way (sync, async without `max_staleness`), an
iteration's end and the next uplink are one wake-up of a callback, not a process (`engine/chained.py`).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import simpy

from hsplit_actors.collector import collector_paused
from hsplit_actors.costmodel import ClientConfig, IterationCost, ModelArch
from hsplit_actors.costmodel.costs import ADAPTER_BYTES
from hsplit_actors.engine.chained import ChainedSession
from hsplit_actors.engine.clock import Clock
from hsplit_actors.engine.durations import Durations, batching_in_effect
from hsplit_actors.engine.executor import AggregationStep, Executor, TimingExecutor
from hsplit_actors.engine.schedules import schedule_for
from hsplit_actors.engine.server import BatchingServer, GPUQueue, GPUReservations, Job
from hsplit_actors.engine.session import AGG_DOWN, AGG_UP, AGGREGATE, DISCARDED, DROPOUT, FED_SERVER, Session, Update
from hsplit_actors.engine.staleness import staleness_weight
from hsplit_actors.fleet import Fleet
from hsplit_actors.fleet.devices import server_rates
from hsplit_actors.methods.base import Strategy
from hsplit_actors.scenario.schema import Scenario
from hsplit_actors.timing.roofline import Rates


@dataclass(frozen=True)
class Progress:
    """Where a run stands, for a progress bar: the round (async: aggregations done) and how much of it is done
    (its participants' iterations, or the buffer's fill), the virtual time, and the latest known metrics
    (train_loss, eval_loss / eval_metric; empty in `plan`)."""

    round: int  # 0-based, the round in progress (or just finished); async: aggregations done
    rounds: int  # how many there will be (async with only `until_s`: 0, and the bar follows virtual time)
    round_done: float  # 0..1
    steps: int  # client iterations dispatched so far
    t: float
    last: dict[str, float] = field(default_factory=dict)
    metric: str = ""  # what last["eval_metric"] measures
    label: str = "round"  # round | aggregation
    until_s: float | None = None
    # rounds (async: aggregations) finished, the latest one's virtual end and the client iterations by then: what
    # a line per round reports, however late it is read (a driver polls the coordinator)
    round_end: tuple[int, float, int] = (0, 0.0, 0)

    @property
    def total(self) -> float:
        return float(self.rounds) if self.rounds else float(self.until_s or 1.0)

    @property
    def completed(self) -> float:
        """Rounds done, fractional (or, bounded by time only, virtual seconds): what the bar shows."""
        if not self.rounds and self.until_s:
            return min(self.t, self.until_s)
        return self.round + self.round_done


ProgressCallback = Callable[[Progress], None]


@dataclass
class SimulationLog:
    """Everything a run records; `tables.py` turns it into the events / rounds / clients tables."""

    configs: list[ClientConfig] = field(default_factory=list)
    costs: list[IterationCost] = field(default_factory=list)
    # client, session, iteration, config, queue, version, batch (jobs in its server batch; 0: no server phase)
    iter_ints: array = field(default_factory=lambda: array("q"))
    iter_times: array = field(default_factory=lambda: array("d"))  # t0..t6: boundaries of the six phases
    other_ints: array = field(default_factory=lambda: array("q"))  # client, session, round, phase, bytes, version
    other_floats: array = field(default_factory=lambda: array("d"))  # t_start, t_end, flops
    session_round: array = field(default_factory=lambda: array("q"))  # per session: its round (-1: none)
    rounds: list[dict] = field(default_factory=list)
    client_config: np.ndarray | None = None  # last configuration id per client (-1: never feasible)
    server_busy_s: float = 0.0
    gpus: int = 1
    by_time: bool = False  # async: traffic is attributed to rows by time (sessions have no round of their own)
    peak_live_versions: int = 1  # most distinct global versions computed on at once (bases a host keeps)
    server_batches: int = 0  # server executions (batches; each job is one without batching)


class Simulation:
    """One run of a scenario on the virtual clock. `executor` decides whether anything is really computed."""

    def __init__(self, scenario: Scenario, arch: ModelArch, fleet: Fleet, strategy: Strategy,
                 executor: Executor | None = None, on_progress: ProgressCallback | None = None):
        self.scenario, self.arch, self.fleet, self.strategy = scenario, arch, fleet, strategy
        self.executor = executor or TimingExecutor()
        self.real = not isinstance(self.executor, TimingExecutor)  # plan: skip the no-op hooks
        self.env = Clock()
        self.executor.attach(self.env)
        rates = server_rates(scenario.server, scenario.model.dtype)
        self.server_flops = rates.flops
        self.durations = strategy.durations or Durations(scenario, arch, fleet.timing or [None] * len(fleet.windows),
                                                         rates)  # `prepare` made one, else here
        self.batching = batching_in_effect(scenario, strategy)
        self.server_group: list[int] = []  # per configuration: its batching group (split point + server ranks)
        self.upload_bytes: list[int] = []  # per configuration: what a participant uploads (FedAvg family: downloads)
        self._groups: dict[tuple, int] = {}
        self.reserving = self._reserves()
        self.gpus: BatchingServer | GPUReservations | GPUQueue
        if self.batching:
            spec = scenario.server.batching
            self.gpus = BatchingServer(self.env, scenario.server.gpus, spec.max_jobs, spec.max_wait_ms / 1e3,
                                       self._batch_time, self._batch_start)
        else:
            self.gpus = (GPUReservations(self.env, scenario.server.gpus, len(fleet)) if self.reserving
                         else GPUQueue(self.env, scenario.server.gpus))
        self.log = SimulationLog(client_config=np.full(len(fleet), -1, dtype=np.int64), gpus=scenario.server.gpus)
        self._config_ids: dict[ClientConfig, int] = {}
        self.windowed = [g for g, spec in enumerate(fleet.windows) if spec is not None]  # entries that go off-line
        self.has_windows = (np.isin(fleet.group, self.windowed) if self.windowed
                            else np.zeros(len(fleet), dtype=bool)).tolist()
        # Plain Python floats: numpy scalars would leak into the clock and make every SimPy heap step slower.
        self.device = {f: getattr(fleet, f).tolist() for f in ("latency_ms", "uplink_mbps", "downlink_mbps",
                                                               "priority")}
        self.uploads = simpy.Store(self.env)  # the upload buffer: every session ends here
        self.finished = self.env.event()
        self.version = 0  # global versions published so far
        self.held = [0] * len(fleet)  # the version each client last downloaded
        self.sessions_of = [0] * len(fleet)
        self.running: dict[int, Session] = {}
        self.global_index = np.full(len(fleet), -1, dtype=np.int64)
        self.feasible = np.zeros(len(fleet), dtype=bool)
        self.download_prefix: list[np.ndarray] | None = None  # stacking methods: cumulative bytes per split point
        self.discarded: list[Session] = []  # not aggregated since the last aggregation (the executor is told)
        spec = scenario.aggregation
        self.weight, self.server_lr = staleness_weight(spec.weights.kind, spec.weights.a, spec.weights.b), spec.lr
        self.on_progress = on_progress
        self.done = 0
        self.next_tick = 0
        self.tick_every = 1
        self.round_done, self.round_steps = 0, 1
        self.round_end = (0, 0.0, 0)
        self.last: dict[str, float] = {}
        self.schedule = schedule_for(spec.mode)(self)
        self.chaining = self.reserving and not self.schedule.stops_sessions

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self) -> SimulationLog:
        self.configure()
        if self.real:
            self.executor.start()
        self.env.process(self.schedule.process())
        # `plan`: millions of live sessions and events; full collections would walk them all (a third of the time)
        with collector_paused() if not self.real else nullcontext():
            self.env.run(until=self.finished)
        if self.real:
            self.executor.finish(self.log.rounds)
        if self.chaining:  # rows were recorded at the next uplink's end
            self._flush()
            self._end_order()
        self.log.server_busy_s = self.gpus.busy_s
        self.log.server_batches = self.gpus.batches
        self.log.by_time = self.schedule.is_async
        return self.log

    def _flush(self) -> None:
        """The rows of chained iterations that ended by the end of the run but whose sessions were still on their
        way to the next uplink (async ends mid-way): the unchained loop recorded them at their ends. An end at
        the final instant was created before it (at its arrival, strictly earlier: a chained iteration's tail
        takes time), so it fired before the run's end did; it counts too."""
        now, times, ints = self.env.now, self.log.iter_times, self.log.iter_ints
        cut = [s for s in self.running.values() if s.pending is not None and s.pending[0][6] <= now]
        for s in sorted(cut, key=lambda s: (s.pending[0][6], s.pending[0][3])):  # by end, then GPU start, as ends fire
            bounds, it, queue_len = s.pending
            times.extend(bounds)
            ints.extend((s.client, s.sid, it, s.config_id, queue_len, s.version, 1))
            s.pending = None

    def _end_order(self) -> None:
        """Put the iteration rows in the order of their ends (ties: as recorded), the order the unchained loop
        records them in: tables break ties in start time by it, and sum per round in it. In place, one column
        at a time (a copy of the whole log would be a gigabyte at a million clients)."""
        times = np.frombuffer(self.log.iter_times, dtype=np.float64).reshape(-1, 7)
        order = np.argsort(times[:, 6], kind="stable")
        if (order == np.arange(len(order))).all():
            return
        ints = np.frombuffer(self.log.iter_ints, dtype=np.int64).reshape(-1, 7)
        for table in (times, ints):
            for column in range(7):
                table[:, column] = table[order, column]

    def configure(self) -> None:
        """The strategy's configuration for the current version (ARMSC reconfigures on aggregations only)."""
        assignment = self.strategy.configure(self.version, self.fleet)
        ids = np.array([self._config_id(c) for c in assignment.configs] + [-1], dtype=np.int64)
        self.global_index = ids[assignment.index]  # -1 stays -1 (the appended sentinel)
        self.feasible = self.global_index >= 0
        self.log.client_config[self.feasible] = self.global_index[self.feasible]

    def participants(self, rnd: int) -> np.ndarray:
        """Feasible, idle clients that take part in round `rnd`: per-round availability draw, on-line now."""
        rng = np.random.default_rng([self.scenario.seed, rnd])
        take_part = self.feasible & (rng.random(len(self.fleet)) < self.fleet.participation)
        offline = [g for g in self.windowed if not self.fleet.group_online(g, self.env.now)]
        if offline:  # only fleet entries with windows can be off-line: one pass over the clients, not one per entry
            take_part &= ~np.isin(self.fleet.group, offline)
        if self.running:  # still busy with an earlier round's session (semi_sync, carry)
            take_part[[s.client for s in self.running.values()]] = False
        return np.flatnonzero(take_part)

    def start_session(self, c: int, rnd: int, uploads: bool) -> Session:
        config_id = int(self.global_index[c])
        config = self.log.configs[config_id]
        held = self.held[c]
        down = 0
        if held < self.version:
            if self.download_prefix is None:  # FedAvg family: the current global adapters of its configuration
                down = self.upload_bytes[config_id]
            else:  # stacking: every stack published since its last download, on its side of the split
                k = config.split_point
                down = int(self.download_prefix[self.version][k] - self.download_prefix[held][k])
        s = Session(len(self.log.session_round), c, self.sessions_of[c], self.version, config_id, rnd, uploads,
                    down, self.upload_bytes[config_id] if uploads else 0)
        self.sessions_of[c] += 1
        self.held[c] = self.version
        self.log.session_round.append(rnd)
        self.running[s.sid] = s
        phases = self._phase_times(s) if self.chaining else None
        if phases is not None and self._chains(s, phases):
            ChainedSession(self, s, phases).start()
            return s
        self.env.process(self.session(s, phases))
        return s

    # -- the interface the aggregation schedules drive (schedules.base.Engine) -------------------------------
    def online(self, c: int) -> bool:
        return not self.has_windows[c] or self.fleet.online(c, self.env.now)

    def aggregate(self, rnd: int, updates: list[Session]):
        """The one aggregation step (updates in client order): the server's weighted sum on the clock, then the
        executor folds them into the next version, which it publishes (`_publish`). Returns the row's metrics."""
        env = self.env
        flops = 2.0 * sum(u.up_bytes for u in updates) / ADAPTER_BYTES  # a weighted sum over every uploaded parameter
        if flops:  # centralised training aggregates nothing: no event, but the version is still published
            t0 = env.now
            yield env.timeout(flops / self.server_flops)
            self._record(FED_SERVER, -1, rnd, AGGREGATE, t0, env.now, 0, flops, self.version + 1)
        published: list[bool] = []

        def publish() -> None:
            if published:
                raise AssertionError("an executor published an aggregation twice")
            published.append(True)
            self._publish([self.log.configs[u.config_id] for u in updates])

        staleness = [self.version - u.version for u in updates]
        step = AggregationStep(rnd, self.version + 1, tuple(Update(u, d, self.weight(d)) for u, d in
                                                             zip(updates, staleness, strict=True)),
                               self.server_lr, tuple(self.discarded), tuple(self.running.values()), publish)
        self.discarded = []
        metrics = self.executor.aggregate(step)
        if not published:
            raise AssertionError("the executor did not publish the aggregation")
        return metrics

    def discard(self, s: Session) -> None:
        """An update that arrived but is not aggregated (too stale, or late under `late: drop`)."""
        self._record(s.client, s.sid, -1, DISCARDED, self.env.now, self.env.now, 0, 0.0, s.version)
        self.discarded.append(s)

    def assign_round(self, s: Session, index: int) -> None:
        """Async: the aggregation that took this session's update."""
        self.log.session_round[s.sid] = index

    def record_round(self, row: dict, metrics: dict) -> None:
        self.log.rounds.append(row)
        if self.on_progress is not None:
            self.last = self.last | {k: v for k, v in metrics.items() if v == v}  # the latest of each
            self.round_done = self.round_steps
            self.round_end = (len(self.log.rounds), self.env.now, self.done)
            self.report()

    def begin_progress(self, participants: int) -> None:
        """Progress bookkeeping for a round (or buffer) of `participants` sessions."""
        self.tick_every = max(1, participants * self.scenario.local_iterations // 200)
        self.round_done, self.round_steps = 0, max(1, participants * self.scenario.local_iterations)

    def _publish(self, configs: list[ClientConfig]) -> None:
        """A new version exists: what downloading it costs (stacking methods), then the new configuration."""
        stack = self.strategy.stack_download(configs)
        if stack is not None:
            if self.download_prefix is None:
                self.download_prefix = [np.zeros(self.arch.n_layers + 1, dtype=np.int64)]
            self.download_prefix.append(self.download_prefix[-1] + stack)
        self.version += 1
        self.configure()
        live = len({s.version for s in self.running.values()} | {self.version})
        self.log.peak_live_versions = max(self.log.peak_live_versions, live)

    # -- one client's session: SPEC §1 top to bottom ------------------------------------------------------
    def session(self, s: Session, phases: tuple[float, float, float, float, float] | None = None):
        """Download the version it lacks, run its local iterations, upload its update into the buffer."""
        c = s.client
        down_bps, lat = self.device["downlink_mbps"][c] * 1e6, self.device["latency_ms"][c] / 1e3
        if s.down_bytes:
            yield from self._transfer(s, AGG_DOWN, s.down_bytes, down_bps, lat)
        if self.real:
            self.executor.begin_session(s, self.log.configs[s.config_id])
        ended = yield from self._iterations(s, phases or self._phase_times(s))
        if ended is not None:  # stopped or dropped out: no upload
            self._end(s, *ended)
            return
        if s.uploads and s.up_bytes:
            yield from self._transfer(s, AGG_UP, s.up_bytes, self.device["uplink_mbps"][c] * 1e6, lat)
        self._deliver(s)

    def _deliver(self, s: Session) -> None:
        """The session is over and its update (if any) uploaded: into the buffer, where the schedule reads it."""
        s.outcome = "update" if s.uploads else "done"
        del self.running[s.sid]
        self.uploads.put(s)

    def _transfer(self, s: Session, phase: int, nbytes: int, bps: float, lat: float):
        t0 = self.env.now
        yield self.env.timeout(nbytes * 8 / bps + lat)
        self._record(s.client, s.sid, -1, phase, t0, self.env.now, nbytes, 0.0, s.version)

    def _phase_times(self, s: Session) -> tuple[float, float, float, float, float]:
        """The session's client forward, uplink, server step, downlink and client backward, in seconds."""
        fleet, dev, c = self.fleet, self.device, s.client
        cost, config = self.log.costs[s.config_id], self.log.configs[s.config_id]
        rates = Rates.of(fleet.flops[c], fleet.mem_gbps[c], fleet.launch_us[c])  # per session: no 1M-object list
        lat = dev["latency_ms"][c] / 1e3
        t_fwd, t_bwd = self.durations.client(cost, config, int(fleet.group[c]), rates)
        t_up = cost.uplink_bytes * 8 / (dev["uplink_mbps"][c] * 1e6) + lat
        t_down = cost.downlink_bytes * 8 / (dev["downlink_mbps"][c] * 1e6) + lat
        return t_fwd, t_up, self.durations.server(cost, config), t_down, t_bwd

    def _chains(self, s: Session, phases: tuple[float, ...]) -> bool:
        """Whether the session runs as a `ChainedSession` instead of `session`: chaining is on, it is split, its
        client is always on-line, and its iterations' tails take time (`_flush`)."""
        k = self.log.configs[s.config_id].split_point
        return (self.chaining and 0 < k < self.arch.n_layers and not self.has_windows[s.client]
                and phases[2] + phases[3] + phases[4] > 0)

    def _iterations(self, s: Session, phases: tuple[float, float, float, float, float]):
        """The S local iterations, each client_fwd -> uplink -> queue -> server -> downlink -> client_bwd, recorded
        as one row of phase boundaries. Returns None, or (outcome, phase) when the session ends early. Nothing
        looks at a session between its forward and uplink, or its downlink and backward (stops and drop-outs
        are checked between iterations), so each pair is one event at the instant the two would reach; under
        FIFO in `plan`, the GPU is reserved on arrival and the rest of the iteration is one event."""
        env, timeout, at, ex, gpus = self.env, self.env.timeout, self.env.at, self.executor, self.gpus
        fleet, dev, c = self.fleet, self.device, s.client
        k, n_layers = self.log.configs[s.config_id].split_point, self.arch.n_layers
        on_device, uses_server, split = k > 0, k < n_layers, 0 < k < n_layers
        t_fwd, t_up, t_srv, t_down, t_bwd = phases
        batching, group, reserving = self.batching, self.server_group[s.config_id], self.reserving
        discipline = self.scenario.server.queue
        key = 0.0 if discipline == "fifo" else (t_srv if discipline == "sjf" else float(dev["priority"][c]))
        watch = self.has_windows[c]
        real, progress = self.real, self.on_progress
        ints, times = self.log.iter_ints, self.log.iter_times
        sid, version, cfg = s.sid, s.version, s.config_id
        for it in range(self.scenario.local_iterations):
            if s.stop:
                return "stopped", DISCARDED
            if watch and not fleet.online(c, env.now):
                return "dropout", DROPOUT
            t0 = env.now
            if real:
                ex.client_forward(s, it)
            queue_len = batch = 0
            if split:  # forward then uplink: one event at the uplink's end, the same instants
                t1 = t0 + t_fwd
                t2 = t3 = t4 = t5 = t1 + t_up
                yield at(t2)
            else:
                if on_device:
                    yield timeout(t_fwd)
                t1 = t2 = t3 = t4 = t5 = env.now
            if uses_server and reserving:  # its start known on arrival: one event on to the iteration's end
                t3, queue_len = gpus.reserve(t_srv)
                batch = 1
                t4 = t5 = t3 + t_srv
                end = t4
                if split:
                    t5 = t4 + t_down
                    end = t5 + t_bwd
                yield at(end, t3)  # parked in the GPU queue's order until it starts: a small heap
            else:
                if uses_server:
                    queue_len = len(gpus) if batching or discipline != "fifo" else gpus.queued()
                    if batching:  # the batch's start and size come back with the job
                        job = gpus.submit(key, group, (s, it))
                        yield job.done
                        t3, batch = job.start, job.size
                    else:
                        yield gpus.request(key, t_srv)
                        t3, batch = env.now, 1
                        if real:
                            ex.server_step(s, it)
                        yield timeout(t_srv)
                        gpus.release(t_srv)
                    t4 = t5 = env.now
                if split:  # downlink then backward: one event at the backward's end
                    t5 = t4 + t_down
                    if real:
                        ex.client_backward(s, it)
                    yield at(t5 + t_bwd)
                else:
                    if real:
                        ex.client_backward(s, it)
                    if on_device:
                        yield timeout(t_bwd)
            times.extend((t0, t1, t2, t3, t4, t5, env.now))
            ints.extend((c, sid, it, cfg, queue_len, version, batch))
            if progress is not None:
                self._tick()
        return None

    def _end(self, s: Session, outcome: str, phase: int) -> None:
        s.outcome = outcome
        self._record(s.client, s.sid, -1, phase, self.env.now, self.env.now, 0, 0.0, s.version)
        del self.running[s.sid]
        self.uploads.put(s)

    def _reserves(self) -> bool:
        """Whether server jobs reserve their GPU on arrival (one event per server phase fewer): FIFO without
        batching, where a job's start is known then; and `plan` only, since `run` tells the executor of each
        server step at its start."""
        return not self.real and not self.batching and self.scenario.server.queue == "fifo"

    # -- the batching server's hooks ----------------------------------------------------------------------
    def _batch_time(self, jobs: list[Job]) -> float:
        """A batch's jobs share one configuration's server side: its time at the summed batch."""
        cfg = jobs[0].payload[0].config_id
        return self.durations.server(self.log.costs[cfg], self.log.configs[cfg], len(jobs))

    def _batch_start(self, jobs: list[Job]) -> None:
        if not self.real:
            return
        if len(jobs) == 1:
            self.executor.server_step(*jobs[0].payload)
        else:
            self.executor.server_batch([job.payload for job in jobs])

    # -- progress -----------------------------------------------------------------------------------------
    def _tick(self) -> None:
        """One client-iteration done: report every `tick_every` of them."""
        self.done += 1
        self.round_done += 1
        if self.done >= self.next_tick:
            self.next_tick = self.done + self.tick_every
            self.report()

    def report(self) -> None:
        sched = self.schedule
        self.on_progress(Progress(sched.position, sched.total, min(1.0, sched.fill(self.round_done, self.round_steps)),
                                  self.done, self.env.now,
                                  dict(self.last), self.executor.metric, sched.label, sched.until_s,
                                  self.round_end))

    # -- bookkeeping ----------------------------------------------------------------------------------------
    def _config_id(self, config: ClientConfig) -> int:
        if config not in self._config_ids:
            self._config_ids[config] = len(self.log.configs)
            self.log.configs.append(config)
            self.log.costs.append(self.strategy.cost(config))
            self.upload_bytes.append(self.strategy.upload_bytes(config))  # per session otherwise: a cost model call
            k = config.split_point
            self.server_group.append(self._groups.setdefault((k, config.ranks[k:]), len(self._groups)))
        return self._config_ids[config]

    def _record(self, c: int, sid: int, rnd: int, phase: int, t0: float, t1: float, nbytes: int, flops: float,
                version: int) -> None:
        self.log.other_ints.extend((c, sid, rnd, phase, nbytes, version))
        self.log.other_floats.extend((t0, t1, flops))
