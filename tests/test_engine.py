"""Laws of the timing engine: durations come from the cost model, phases are contiguous, the server never runs
more jobs than it has GPUs, queue disciplines order the queue, barriers hold, runs are deterministic."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hsplit_actors.engine.session import PHASES
from hsplit_actors.preparation import prepare
from hsplit_actors.scenario import parse_scenario
from hsplit_actors.simulation import simulate
from tests.conftest import small_scenario


def run(raw: dict):
    import yaml

    scenario = parse_scenario(yaml.safe_dump(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setup = prepare(scenario)
    tables, _, extra = simulate(scenario, setup)
    return scenario, setup, tables, extra


def test_same_seed_same_tables_different_seed_different_fleet() -> None:
    _, _, a, _ = run(small_scenario())
    _, _, b, _ = run(small_scenario())
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.rounds.drop(columns="wall_s"), b.rounds.drop(columns="wall_s"))
    pd.testing.assert_frame_equal(a.clients, b.clients)
    _, _, c, _ = run(small_scenario(seed=2))
    assert not np.array_equal(a.clients["uplink_mbps"], c.clients["uplink_mbps"])


def test_phase_durations_are_the_cost_model_over_device_speed() -> None:
    """The default model: max(FLOPs / sustained FLOP/s, bytes / bandwidth) + kernels x launch cost, with each
    device's figures from the clients table and the server's from its catalogue entry at the model's dtype."""
    from hsplit_actors.fleet.devices import server_rates

    scenario, setup, tables, _ = run(small_scenario())
    ev, clients = tables.events, tables.clients.set_index("client")
    cost = setup.strategy.cost(setup.strategy.uniform(2))
    dur = ev["t_end"] - ev["t_start"]

    def roofline(flops, nbytes, kernels) -> pd.Series:
        device = clients.loc[ev["client"].clip(lower=0)].reset_index(drop=True).set_axis(ev.index)
        return np.maximum(flops / device["flops"], nbytes / (device["mem_gbps"] * 1e9)) \
            + kernels * device["launch_us"] * 1e-6

    server = server_rates(scenario.server, scenario.model.dtype)
    assert server.flops == pytest.approx(1.95e13 * 0.75)  # a100_40gb's fp32 peak x its fp32 utilisation
    for phase, expected in {
        "client_fwd": roofline(cost.client_fwd_flops, cost.client_fwd_bytes, cost.client_fwd_kernels),
        "client_bwd": roofline(cost.client_bwd_flops, cost.client_bwd_bytes, cost.client_bwd_kernels),
        "uplink": cost.uplink_bytes * 8 / (ev["client"].map(clients["uplink_mbps"]) * 1e6)
        + ev["client"].map(clients["latency_ms"]) / 1e3,
        "downlink": cost.downlink_bytes * 8 / (ev["client"].map(clients["downlink_mbps"]) * 1e6)
        + ev["client"].map(clients["latency_ms"]) / 1e3,
        "server": pd.Series(max(cost.server_flops / server.flops, (cost.server_weight_bytes + cost.server_job_bytes)
                                / server.bytes_per_s) + cost.server_kernels * server.launch_s, index=ev.index),
    }.items():
        sel = ev["phase"] == phase
        np.testing.assert_allclose(dur[sel], expected[sel], rtol=1e-9)
    assert (ev.loc[ev["phase"] == "uplink", "bytes"] == cost.uplink_bytes).all()
    assert (ev.loc[ev["phase"] == "client_fwd", "flops"] == cost.client_fwd_flops).all()


def test_phases_of_an_iteration_are_contiguous_and_ordered() -> None:
    _, _, tables, _ = run(small_scenario())
    work = tables.events[tables.events["phase"].isin(PHASES)].copy()
    work["order"] = work["phase"].map({p: i for i, p in enumerate(PHASES)}).astype(int)
    work = work.sort_values(["client", "round", "iteration", "order"])
    for _, it in work.groupby(["client", "round", "iteration"]):
        assert it["order"].tolist() == list(range(6))
        np.testing.assert_array_equal(it["t_end"].to_numpy()[:-1], it["t_start"].to_numpy()[1:])
    # and the next iteration starts when the previous one ended
    first = work[work["order"] == 0].sort_values(["client", "round", "iteration"])
    last = work[work["order"] == 5].sort_values(["client", "round", "iteration"])
    same_round = (first["round"].to_numpy()[1:] == first["round"].to_numpy()[:-1]) & \
                 (first["client"].to_numpy()[1:] == first["client"].to_numpy()[:-1])
    np.testing.assert_array_equal(first["t_start"].to_numpy()[1:][same_round],
                                  last["t_end"].to_numpy()[:-1][same_round])


@settings(max_examples=300, deadline=None)
@given(now=st.floats(0.0, 1e7), first=st.floats(1e-12, 1e4), second=st.floats(1e-12, 1e4))
@example(now=6384.666237903288, first=10000.0, second=6384.481015368026)  # no float delay lands there
def test_merged_phases_end_where_two_timeouts_would(now: float, first: float, second: float) -> None:
    """One event stands for forward + uplink (downlink + backward): it lands on the very instant the two
    timeouts reach, bit for bit, also where no single delay could (a rounding tie, pinned above), or the
    server's arrival order (and every table) would drift."""
    from hsplit_actors.engine.clock import Clock

    env = Clock(now)
    seen = []

    def two():
        yield env.timeout(first)
        yield env.timeout(second)
        seen.append(env.now)

    def one():
        yield env.at((now + first) + second)
        seen.append(env.now)

    env.process(two())
    env.process(one())
    env.run()
    assert seen[0] == seen[1] == (now + first) + second


@settings(max_examples=200, deadline=None)
@given(jobs=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.booleans()), min_size=1, max_size=30))
@example(jobs=[(0, 3, False), (0, 3, True), (1, 1, False), (2, 0, True)])  # three queue behind the first
@example(jobs=[(0, 1, False)] * 3 + [(0, 0, False)] + [(3, 0, False)] * 3)  # one parked until 3 fires at 3,
# before an arrival at 3 that fires at 3 too
def test_parked_events_fire_when_and_in_the_order_unparked_ones_would(jobs) -> None:
    """`at(time, after=start)` keeps an event out of SimPy's heap until `start`: it must fire at `time`, in the
    order (time, then creation) that the same event put in the heap at once would, also among ordinary
    timeouts. Each job arrives at a one-GPU FIFO server, parks until its start (the later of its arrival and the
    previous job's end: starts never decrease), and ends `length` later plus a tail; some jobs also have a
    plain timeout to the same instant."""
    from hsplit_actors.engine.clock import Clock

    def fire(park: bool) -> list[tuple[float, int]]:
        env, log, free_from = Clock(), [], [0.0]

        def job(k: int, arrival: int, length: int):
            yield env.timeout(arrival)
            start = max(free_from[0], env.now)
            free_from[0] = start + length
            yield env.at(start + length + k % 3, start if park else -1.0)
            log.append((env.now, k))

        def twin(k: int, end: int):
            yield env.timeout(end)
            log.append((env.now, -k - 1))

        for k, (arrival, length, with_twin) in enumerate(jobs):
            env.process(job(k, arrival, length))
            if with_twin:
                env.process(twin(k, arrival + length))
        env.run()
        return log

    parked, direct = fire(True), fire(False)
    assert parked == direct
    assert [t for t, _ in parked] == sorted(t for t, _ in parked)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gpus=st.sampled_from([1, 2, 3, 10**20]), n=st.integers(1, 8), iterations=st.integers(1, 4),
       seed=st.integers(0, 1000), mode=st.sampled_from(["sync", "semi_sync", "async", "async_until", "async_stale"]),
       same_links=st.booleans(), split=st.sampled_from([0, 1, 2, 3, 4]))
def test_gpu_reservations_give_the_tables_of_the_queued_requests(gpus, n, iterations, seed, mode,
                                                                 same_links, split) -> None:
    """`plan` reserves a GPU on arrival under FIFO (and, where no session is ever stopped, chains an
    iteration's end with the next uplink): every table and the server's busy time must be those of requests
    waiting in the queue, the path `run` takes. Identical links put clients on the same instants, where order
    decides; async runs end with sessions mid-way (after `aggregations`, or at `until_s`), and with
    `max_staleness` sessions are stopped (no chaining). More GPUs than clients: reservations keep a slot per
    client at most."""
    import hsplit_actors.engine.sim as sim

    def uplink():  # a fresh value per fleet entry (the YAML dump would write a shared one as an alias)
        return 20 if same_links else {"lognormal": {"median": 12, "sigma": 0.5}}

    modes = {"sync": {"mode": "sync"}, "semi_sync": {"mode": "semi_sync", "min_updates": 2, "late": "carry"},
             "async": {"mode": "async", "concurrency": 3, "buffer": 2, "aggregations": 3},
             "async_until": {"mode": "async", "concurrency": 3, "buffer": 2, "until_s": 0.4},
             "async_stale": {"mode": "async", "concurrency": 3, "buffer": 2, "aggregations": 3, "max_staleness": 0}}
    raw = small_scenario(
        seed=seed, local_iterations=iterations, rounds=2, aggregation=modes[mode],
        fleet=[{"profile": {"choice": {"agx_orin": 1, "orin_nano": 1}}, "count": n, "uplink_mbps": uplink()},
               {"profile": "jetson_nano", "count": 2, "uplink_mbps": uplink()}],
        server={"profile": "l4_24gb", "gpus": gpus, "queue": "fifo"},
        method={0: {"name": "cenlora", "rank": 4}, 4: {"name": "fedit", "rank": 4}}.get(
            split, {"name": "sfl", "split_point": split, "rank": 4}),
    )
    with pytest.MonkeyPatch.context() as patch:
        _, _, fast, fast_extra = run(raw)
        patch.setattr(sim.Simulation, "_reserves", lambda self: False)
        _, _, queued, queued_extra = run(raw)
    pd.testing.assert_frame_equal(fast.events, queued.events, check_exact=True)
    pd.testing.assert_frame_equal(fast.clients, queued.clients, check_exact=True)
    pd.testing.assert_frame_equal(fast.rounds.drop(columns="wall_s"), queued.rounds.drop(columns="wall_s"),
                                  check_exact=True)
    assert fast_extra["server_busy_s"] == queued_extra["server_busy_s"]


def _max_concurrency(starts: np.ndarray, ends: np.ndarray) -> int:
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
    order = np.lexsort((steps, times))  # at equal times, a job ends before the next begins
    return int(np.cumsum(steps[order]).max()) if len(times) else 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gpus=st.integers(1, 4), n=st.integers(1, 12), queue=st.sampled_from(["fifo", "sjf", "priority"]),
       iterations=st.integers(1, 4), seed=st.integers(0, 1000))
def test_server_never_runs_more_jobs_than_gpus_and_every_iteration_completes(gpus, n, queue, iterations, seed):
    raw = small_scenario(
        seed=seed, local_iterations=iterations, rounds=2,
        fleet=[{"profile": {"choice": {"agx_orin": 1, "desktop_rtx4090": 1, "orin_nano": 1}}, "count": n,
                "priority": 1}, {"profile": "laptop_rtx3060", "count": 2, "priority": 0}],
        server={"profile": "l4_24gb", "gpus": gpus, "queue": queue},
    )
    _, _, tables, extra = run(raw)
    server = tables.events[tables.events["phase"] == "server"]
    assert _max_concurrency(server["t_start"].to_numpy(), server["t_end"].to_numpy()) <= gpus
    assert len(server) == (n + 2) * iterations * 2
    queue_rows = tables.events[tables.events["phase"] == "queue"]
    assert (queue_rows["t_end"] >= queue_rows["t_start"]).all()
    assert extra["server_busy_s"] == pytest.approx((server["t_end"] - server["t_start"]).sum())


def _waiting_at(queue_rows: pd.DataFrame, t: float) -> pd.DataFrame:
    return queue_rows[(queue_rows["t_start"] <= t) & (queue_rows["t_end"] > t)]


@pytest.mark.parametrize("discipline", ["fifo", "sjf", "priority"])
def test_queue_discipline_decides_who_gets_the_gpu(discipline: str) -> None:
    """At every grant, nobody still waiting should have gone first under the discipline."""
    raw = small_scenario(
        fleet=[{"profile": "desktop_rtx4090", "count": 6, "priority": 5},
               {"profile": "agx_orin", "count": 6, "priority": 1}],
        server={"profile": "rtx4090", "gpus": 1, "queue": discipline},
        method={"name": "sfl", "split_point": 1, "rank": 4, "per_device": {"agx_orin": {"split_point": 3}}},
        local_iterations=4,
    )
    _, _, tables, _ = run(raw)
    ev = tables.events
    queue_rows = ev[ev["phase"] == "queue"].copy()
    server = ev[ev["phase"] == "server"].set_index(["client", "round", "iteration"])
    keys = zip(queue_rows["client"], queue_rows["round"], queue_rows["iteration"], strict=True)
    queue_rows["job_s"] = [server.loc[k, "t_end"] - server.loc[k, "t_start"] for k in keys]
    queue_rows["priority"] = np.where(queue_rows["client"] < 6, 5, 1)
    contested = 0
    for _, job in queue_rows.iterrows():
        others = _waiting_at(queue_rows, job["t_end"])
        others = others[others["client"] != job["client"]]
        if len(others) == 0:
            continue
        contested += 1
        if discipline == "fifo":
            assert (others["t_start"] >= job["t_start"]).all()
        elif discipline == "sjf":
            assert (others["job_s"] >= job["job_s"] - 1e-12).all()
        else:
            assert (others["priority"] >= job["priority"]).all()
    assert contested > 0, "the scenario should make jobs wait"


def test_aggregation_waits_for_every_upload_and_the_next_round_opens_with_its_download() -> None:
    _, _, tables, _ = run(small_scenario(rounds=3))
    ev, rounds = tables.events, tables.rounds
    for r in range(3):
        mine = ev[ev["round"] == r]
        agg = mine[mine["phase"] == "aggregate"]
        assert len(agg) == 1 and agg["client"].iloc[0] == -1 and agg["version"].iloc[0] == r + 1
        assert agg["t_start"].iloc[0] >= mine.loc[mine["phase"] == "agg_up", "t_end"].max()
        assert rounds.loc[r, "t_end"] == agg["t_end"].iloc[0] and rounds.loc[r, "version"] == r + 1
        downloads = mine[mine["phase"] == "agg_down"]
        if r == 0:  # everyone starts from version 0
            assert len(downloads) == 0
        else:  # each participant downloads the version the previous round published, when it starts
            assert len(downloads) == rounds.loc[r, "participants"]
            assert (downloads["t_start"] == rounds.loc[r - 1, "t_end"]).all()
        work = mine[mine["phase"].isin(PHASES)]
        assert (work["version"] == r).all()
    np.testing.assert_array_equal(rounds["t_start"].to_numpy()[1:], rounds["t_end"].to_numpy()[:-1])


def test_aggregation_interval_skips_aggregation_between() -> None:
    _, _, tables, _ = run(small_scenario(rounds=5, aggregation_interval=2))
    agg_rounds = sorted(tables.events.loc[tables.events["phase"] == "aggregate", "round"])
    assert agg_rounds == [1, 3, 4]  # every 2nd round, and always the last
    assert tables.rounds["aggregated"].tolist() == [False, True, False, True, True]


def test_federated_and_centralised_methods_have_only_their_phases() -> None:
    _, _, fed, _ = run(small_scenario(method={"name": "fedit", "rank": 4}))
    phases = set(fed.events["phase"].astype(str))
    assert phases == {"client_fwd", "client_bwd", "agg_up", "aggregate", "agg_down"}
    _, _, cen, _ = run(small_scenario(method={"name": "cenlora", "rank": 4}))
    assert set(cen.events["phase"].astype(str)) == {"queue", "server"}
    assert (cen.clients["split_point"] == 0).all()


def test_flora_downloads_the_whole_stack_and_hetlora_only_its_own_rank() -> None:
    from hsplit_actors.costmodel import ClientConfig, iteration_cost

    _, setup, _, _ = run(small_scenario())
    arch = setup.arch
    need = [iteration_cost(arch, ClientConfig.uniform(arch, arch.n_layers, r, ["query", "value"]), 4, 32)
            .client_memory_bytes / 2**30 for r in (2, 16)]
    between = (need[0] + need[1]) / 2  # holds rank 2, not rank 16
    fleet = [{"profile": "agx_orin", "count": 2}, {"profile": "laptop_rtx3060", "count": 2, "memory_gb": between}]
    _, _, flora, _ = run(small_scenario(fleet=fleet, method={"name": "flora", "ranks": [2, 16]}))
    _, _, het, _ = run(small_scenario(fleet=fleet, method={"name": "hetlora", "ranks": [2, 16]}))
    for tables in (flora, het):
        assert tables.clients["trainable_params"].nunique() == 2  # budgets give different ranks
    ev = flora.events
    ups = ev.loc[(ev["round"] == 0) & (ev["phase"] == "agg_up"), "bytes"]
    assert (ev.loc[(ev["round"] == 1) & (ev["phase"] == "agg_down"), "bytes"] == ups.sum()).all()
    ev = het.events
    up = ev[(ev["round"] == 0) & (ev["phase"] == "agg_up")].set_index("client")["bytes"]
    down = ev[(ev["round"] == 1) & (ev["phase"] == "agg_down")].set_index("client")["bytes"]
    pd.testing.assert_series_equal(up.sort_index(), down.sort_index(), check_index_type=False)


def test_participation_probability_is_respected() -> None:
    raw = small_scenario(fleet=[{"profile": "orin_nano", "count": 200, "availability": 0.3}], rounds=10,
                         local_iterations=1)
    _, _, tables, _ = run(raw)
    share = tables.rounds["participants"].mean() / 200
    assert 0.22 < share < 0.38
    assert tables.rounds["participants"].nunique() > 1  # drawn per round


def test_devices_going_offline_drop_out_and_do_not_upload() -> None:
    raw = small_scenario(
        fleet=[{"profile": "agx_orin", "count": 2},
               {"profile": "raspberry_pi5", "count": 2, "uplink_mbps": 0.1,  # ~5 s per iteration
                "availability": {"windows": [[0, 5]], "period": 1000}}],
        local_iterations=5, rounds=1,
    )
    _, _, tables, _ = run(raw)
    ev = tables.events
    dropped = set(ev.loc[ev["phase"] == "dropout", "client"])
    assert dropped == {2, 3}
    assert set(ev.loc[ev["phase"] == "agg_up", "client"]) == {0, 1}
    assert tables.rounds["dropouts"].iloc[0] == 2


def test_server_memory_over_budget_warns_and_is_recorded() -> None:
    """Per-client server adapters (SFL-V1) for many clients on a small GPU: warned, estimate in meta."""
    import yaml

    from hsplit_actors.preparation import ServerMemoryWarning

    raw = small_scenario(fleet=[{"profile": "agx_orin", "count": 50}], server={"profile": "l4_24gb",
                         "memory_gb": 0.05}, method={"name": "sfl", "split_point": 1, "rank": 16,
                                                     "targets": ["query", "value", "ffn_in", "ffn_out"]})
    scenario = parse_scenario(yaml.safe_dump(raw))
    with pytest.warns(ServerMemoryWarning, match="server.memory_gb"):
        setup = prepare(scenario)
    _, _, v1 = simulate(scenario, setup)
    shared = parse_scenario(yaml.safe_dump(raw | {"method": raw["method"] | {"variant": "v2"}}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, v2 = simulate(shared, prepare(shared))
    assert v1["server_memory_gb_estimate"] > v2["server_memory_gb_estimate"] > 0


def test_progress_fills_each_round_whatever_its_participants_and_never_goes_back() -> None:
    import yaml

    raw = small_scenario(fleet=[{"profile": "orin_nano", "count": 50, "availability": 0.3}], rounds=4,
                         local_iterations=3)
    scenario = parse_scenario(yaml.safe_dump(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setup = prepare(scenario)
    seen = []
    tables, _, _ = simulate(scenario, setup, on_progress=seen.append)
    assert [p.completed for p in seen] == sorted(p.completed for p in seen)
    ends = list({p.round: p for p in seen}.values())  # the last report of each round: at its end, full
    assert [p.round for p in ends] == [0, 1, 2, 3] and all(p.round_done == 1.0 for p in ends)  # ~30% take part
    assert [p.t for p in ends] == tables.rounds["t_end"].tolist()
    assert seen[-1].completed == 4 and seen[-1].steps == tables.rounds["participants"].sum() * 3
    assert seen[-1].last == {} and seen[-1].metric == ""  # plan trains nothing


@pytest.mark.parametrize("enabled", [True, False])
def test_plan_pauses_the_garbage_collector_while_simulating_and_leaves_it_as_it_was(enabled: bool) -> None:
    """A full collection walks every live session and event (a third of a 100k-client plan's time), so `plan`
    simulates with the collector off (`collector_paused`, which the actors' imports use too), and gives it back
    as it found it, also to a caller who had it off."""
    import gc

    from hsplit_actors.engine.sim import Simulation

    scenario = parse_scenario(__import__("yaml").safe_dump(small_scenario()))
    setup = prepare(scenario)
    during: list[bool] = []
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        Simulation(scenario, setup.arch, setup.fleet, setup.strategy,
                   on_progress=lambda _: during.append(gc.isenabled())).run()
        after = gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
    assert during and not any(during)
    assert after is enabled


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.booleans(), st.booleans()), min_size=1,
                      max_size=25))
def test_wake_ups_fire_when_and_in_the_order_events_created_in_their_place_would(items) -> None:
    """`plan`'s chained sessions are woken by the clock (`Clock.wake`) instead of firing events: mixed with events,
    parked or not, urgent or not, a wake-up must come at its instant and in the order (time, priority, creation)
    an event created in its place would, or ties between sessions would resolve differently from the process
    path."""
    from simpy.events import NORMAL, URGENT

    from hsplit_actors.engine.clock import Clock, Waker

    class Note(Waker):
        __slots__ = ("log", "k", "env")

        def __init__(self, log, k, env):
            self.log, self.k, self.env = log, k, env

        def wake(self) -> None:
            self.log.append((self.env.now, self.k))

    def fire(with_wakers: bool) -> list:
        env, log = Clock(), []
        for k, (after, extra, urgent, waker) in enumerate(sorted(items, key=lambda i: i[0])):
            time = after + extra
            if with_wakers and waker:
                env.wake(Note(log, k, env), time, -1.0 if urgent else after, URGENT if urgent else NORMAL)
                continue
            if urgent:
                event = env.event()
                event._ok, event._value = True, None
                env.schedule(event, URGENT, time)
            else:
                event = env.at(time, after)
            event.callbacks.append(lambda _, k=k: log.append((env.now, k)))
        env.run()
        return log

    woken, evented = fire(True), fire(False)
    assert woken == evented
    assert [t for t, _ in woken] == sorted(t for t, _ in woken)


def test_the_clock_refuses_an_event_in_the_past_or_parked_out_of_order() -> None:
    """Either would fire at the wrong instant without a word: SimPy's heap would move the clock backwards, and
    the parked FIFO would hold an event behind a later start. Wake-ups likewise."""
    from hsplit_actors.engine.clock import Clock, Waker

    env = Clock(5.0)
    with pytest.raises(ValueError, match="cannot fire before now"):
        env.at(4.0)
    with pytest.raises(ValueError, match="cannot fire before now"):
        env.at(6.0, after=7.0)
    env.at(9.0, after=8.0)
    with pytest.raises(ValueError, match="before the last parked start"):
        env.at(9.0, after=7.5)
    with pytest.raises(ValueError, match="cannot come before now"):
        env.wake(Waker(), 4.0)
    with pytest.raises(ValueError, match="cannot come before now"):
        env.wake(Waker(), 6.0, after=7.0)
    with pytest.raises(ValueError, match="before the last parked start"):
        env.wake(Waker(), 9.0, after=7.5)
