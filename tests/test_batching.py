"""The batching server (SPEC §2): `max_jobs: 1` is today's server, batches respect their bounds and groups, and a
batch is timed at its summed batch (FLOPs: additive; a profile: the profile at the summed batch)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsplit_actors.scenario.load import architecture
from tests.conftest import small_scenario
from tests.test_engine import run
from tests.timing_helpers import write_profile

FLEET = [{"profile": "jetson_nano", "count": 3}, {"profile": "desktop_rtx4090", "count": 3},
         {"profile": "phone_sd8gen2", "count": 4, "uplink_mbps": {"lognormal": {"median": 30, "sigma": 0.8}}}]
SHARED = [{"name": "splitlora", "split_point": 2, "rank": 4}, {"name": "sfl", "split_point": 2, "variant": "v2"},
          {"name": "hsplitlora", "ranks": [0, 2, 4]}]
MODES = [{"mode": "sync"}, {"mode": "semi_sync", "deadline_s": 2.0},
         {"mode": "async", "concurrency": 6, "buffer": 3, "aggregations": 3}]
# a slow server (10 GFLOP/s) so that jobs queue and batches form
SLOW = {"profile": "l4_24gb", "flops": 1e10}


def contended(**changes) -> dict:
    return small_scenario(fleet=FLEET, rounds=2, local_iterations=3, **changes)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), method=st.sampled_from(SHARED), mode=st.sampled_from(MODES),
       queue=st.sampled_from(["fifo", "sjf", "priority"]), gpus=st.integers(1, 2))
def test_max_jobs_one_is_the_unbatched_server(seed, method, mode, queue, gpus) -> None:
    server = SLOW | {"gpus": gpus, "queue": queue}
    raw = contended(seed=seed, method=method, aggregation=mode, server=server)
    _, _, plain, extra = run(raw)
    _, _, one, extra_one = run(raw | {"server": server | {"batching": {"max_jobs": 1, "max_wait_ms": 0}}})
    pd.testing.assert_frame_equal(plain.events, one.events)
    pd.testing.assert_frame_equal(plain.rounds.drop(columns="wall_s"), one.rounds.drop(columns="wall_s"))
    assert extra["server_busy_s"] == extra_one["server_busy_s"]
    assert extra["server_batches"] == extra_one["server_batches"] >= (plain.events["phase"] == "server").sum()


def _batches(events: pd.DataFrame) -> pd.DataFrame:
    server = events[events["phase"] == "server"]
    return server.groupby(["t_start", "t_end"]).agg(jobs=("client", "size"), batch=("batch", "first"),
                                                    sizes=("batch", "nunique")).reset_index()


@pytest.mark.parametrize("max_jobs", [2, 4])
@pytest.mark.parametrize("method", SHARED[:2])
def test_batches_hold_at_most_max_jobs_of_one_group_and_cost_what_their_jobs_cost(max_jobs, method) -> None:
    raw = contended(method=method, server=SLOW | {"batching": {"max_jobs": max_jobs}})
    _, _, plain, extra = run(contended(method=method, server=SLOW))
    _, setup, batched, extra_b = run(raw)
    batches = _batches(batched.events)
    assert (batches["sizes"] == 1).all() and (batches["batch"] == batches["jobs"]).all()
    assert batches["jobs"].max() <= max_jobs
    assert batches["jobs"].max() > 1, "a contended server must form batches"
    assert extra_b["server_batches"] == len(batches)
    # one GPU: batches never overlap
    ordered = batches.sort_values("t_start")
    assert (ordered["t_start"].to_numpy()[1:] >= ordered["t_end"].to_numpy()[:-1] - 1e-12).all()
    # a batch adds up its jobs' FLOPs and activations but reads the weights and launches the kernels once: it takes
    # what the timing model gives `jobs` jobs, more than one job and less than the jobs one by one
    config = setup.strategy.uniform(2)
    cost = setup.strategy.cost(config)
    durations = batches["t_end"] - batches["t_start"]
    expected = [setup.strategy.durations.server(cost, config, int(j)) for j in batches["jobs"]]
    np.testing.assert_allclose(durations, expected, rtol=1e-9)
    single = (plain.events.loc[plain.events["phase"] == "server", "t_end"]
              - plain.events.loc[plain.events["phase"] == "server", "t_start"]).iloc[0]
    assert single == pytest.approx(expected_one := setup.strategy.durations.server(cost, config, 1), rel=1e-12)
    several = batches["jobs"] > 1
    assert (durations >= expected_one * (1 - 1e-12)).all()
    assert (durations[several] < batches.loc[several, "jobs"] * single).all()
    assert extra_b["server_busy_s"] < extra["server_busy_s"]
    # every iteration still ran, each job's queue phase ends when its batch starts
    server_rows = (batched.events["phase"] == "server").sum()
    assert server_rows == (plain.events["phase"] == "server").sum()


def test_waiting_for_a_fuller_batch_is_bounded_by_max_wait() -> None:
    wait_ms = 300.0
    server = SLOW | {"batching": {"max_jobs": 8, "max_wait_ms": wait_ms}}
    _, _, greedy, _ = run(contended(method=SHARED[0], server=SLOW | {"batching": {"max_jobs": 8}}))
    _, _, waiting, _ = run(contended(method=SHARED[0], server=server))
    ev = waiting.events
    queue = ev[ev["phase"] == "queue"].reset_index(drop=True)
    batches = _batches(ev)
    # one GPU: a batch that is not full starts once its first job has waited max_wait, or when the GPU frees
    batches = batches.sort_values("t_start").reset_index(drop=True)
    free_at = 0.0
    for _, b in batches.iterrows():
        first = queue.loc[queue["t_end"] == b["t_start"], "t_start"].min()
        if b["jobs"] < 8:
            assert b["t_start"] <= max(first + wait_ms / 1e3, free_at) + 1e-9
        free_at = b["t_end"]
    assert _batches(ev)["jobs"].mean() > _batches(greedy.events)["jobs"].mean()


def test_per_client_server_adapters_stay_unbatched() -> None:
    server = SLOW | {"batching": {"max_jobs": 4}}
    raw = contended(method={"name": "sfl", "split_point": 2, "variant": "v1"}, server=server)
    with pytest.warns(UserWarning, match="server.batching is ignored: sfl keeps one server-side adapter set"):
        import yaml

        from hsplit_actors.preparation import prepare
        from hsplit_actors.scenario import parse_scenario

        prepare(parse_scenario(yaml.safe_dump(raw)))
    _, _, batched, _ = run(raw)
    _, _, plain, _ = run(contended(method=raw["method"], server=SLOW))
    pd.testing.assert_frame_equal(plain.events, batched.events)


def test_a_profiled_server_times_a_batch_at_its_summed_batch(tmp_path) -> None:
    raw = contended(method=SHARED[0], server=SLOW)
    scenario, setup, _, _ = run(raw)
    arch = architecture(scenario)
    profile = write_profile(tmp_path / "server.yaml", arch)
    timed = SLOW | {"timing": str(profile), "batching": {"max_jobs": 4}}
    _, setup, tables, _ = run(raw | {"server": timed})
    from hsplit_actors.timing import load_profile

    loaded = load_profile(profile)
    config = setup.strategy.configure(0, setup.fleet).configs[0]
    batches = _batches(tables.events)
    assert batches["jobs"].max() > 1
    for _, b in batches.iterrows():
        expected = loaded.phases(arch, config, 4, 32, jobs=int(b["jobs"]))[2]
        assert b["t_end"] - b["t_start"] == pytest.approx(expected, rel=1e-9)
    # the synthetic law has a launch cost per piece: batching must save time against running jobs one by one
    single = loaded.phases(arch, config, 4, 32)[2]
    assert (batches["t_end"] - batches["t_start"] < batches["jobs"] * single - 1e-12)[batches["jobs"] > 1].all()
