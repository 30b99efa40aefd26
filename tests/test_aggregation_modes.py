"""SPEC §9's laws on the timing engine: async with buffer = concurrency = every client is sync, semi_sync without a
deadline is sync, staleness weights follow their formulas, max_staleness drops exactly the updates it should,
semi_sync deadlines close rounds and drop or carry late work, and contradictory settings are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsplit_actors.cli import main
from hsplit_actors.engine.session import PHASES
from hsplit_actors.engine.staleness import staleness_weight
from tests.conftest import small_scenario
from tests.test_engine import run

SAME = ["round", "version", "t_start", "t_end", "participants", "updates", "aggregated", "bytes_up", "bytes_down",
        "dropouts", "staleness_max"]


def plan(raw: dict):
    _, _, tables, extra = run(raw)
    return tables, extra


# a heterogeneous fleet on a contended server, so arrival order and queueing matter
FLEET = [{"profile": "jetson_nano", "count": 3}, {"profile": "desktop_rtx4090", "count": 2},
         {"profile": "phone_sd8gen2", "count": 3, "uplink_mbps": {"lognormal": {"median": 12, "sigma": 0.8}}}]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), rounds=st.integers(1, 4), iterations=st.integers(1, 3),
       method=st.sampled_from([{"name": "sfl", "split_point": 2, "rank": 4},
                               {"name": "hsplitlora", "ranks": [0, 2, 4]},
                               {"name": "flora", "ranks": [2, 4]}]))
def test_async_with_buffer_and_concurrency_of_every_client_is_sync(seed, rounds, iterations, method) -> None:
    raw = small_scenario(seed=seed, rounds=rounds, local_iterations=iterations, fleet=FLEET, method=method,
                         server={"profile": "l4_24gb", "gpus": 1})
    sync, _ = plan(raw)
    n = 8
    asyn, _ = plan(raw | {"aggregation": {"mode": "async", "concurrency": n, "buffer": n, "aggregations": rounds}})
    pd.testing.assert_frame_equal(sync.events, asyn.events)
    pd.testing.assert_frame_equal(sync.rounds[SAME], asyn.rounds[SAME])
    semi, _ = plan(raw | {"aggregation": {"mode": "semi_sync"}})  # no deadline, min_updates = everyone
    pd.testing.assert_frame_equal(sync.events, semi.events)
    pd.testing.assert_frame_equal(sync.rounds[SAME], semi.rounds[SAME])


@pytest.mark.parametrize(("kind", "a", "b", "expected"), [
    ("constant", None, 4, [1, 1, 1, 1]),
    ("polynomial", None, 4, [1, 2 ** -0.5, 3 ** -0.5, 4 ** -0.5]),
    ("polynomial", 2.0, 4, [1, 1 / 4, 1 / 9, 1 / 16]),
    ("hinge", None, 1, [1, 1, 1 / 11, 1 / 21]),
    ("hinge", 2.0, 0, [1, 1 / 3, 1 / 5, 1 / 7]),
    ("polynomial", 1e300, 4, [1, 0, 0, 0]),  # (1 + s)^a beyond a float: fully discounted, not OverflowError
    ("hinge", 1e300, 0, [1, 0, 0, 0]),
])
def test_staleness_weights_follow_their_formula(kind, a, b, expected) -> None:
    w = staleness_weight(kind, a, b)
    assert [w(s) for s in range(4)] == pytest.approx(expected)


ASYNC = {"mode": "async", "concurrency": 6, "buffer": 2, "aggregations": 8}


def test_async_keeps_concurrency_buffers_arrivals_and_records_staleness() -> None:
    tables, extra = plan(small_scenario(rounds=1, fleet=FLEET, aggregation=ASYNC))
    ev, rounds = tables.events, tables.rounds
    assert len(rounds) == 8 and rounds["version"].tolist() == list(range(1, 9))
    assert (rounds["updates"] == 2).all()
    # every session trains on the version it downloaded; the version published since is its staleness
    work = ev[ev["phase"].isin(PHASES)]
    sessions = work.groupby(["client", "round"])["version"].nunique()
    assert (sessions == 1).all()
    taken = ev[(ev["phase"] == "agg_up") & (ev["round"] >= 0)]
    stale = [rounds.loc[r, "version"] - 1 - v for r, v in zip(taken["round"], taken["version"], strict=True)]
    per_row = pd.Series(stale).groupby(taken["round"].to_numpy()).max()
    np.testing.assert_array_equal(per_row.to_numpy(), rounds["staleness_max"].to_numpy())
    assert rounds["staleness_max"].max() > 0  # fast clients lap slow ones
    # never more than `concurrency` sessions at once
    span = work.groupby(["client", "round"]).agg(start=("t_start", "min"), end=("t_end", "max"))
    times = np.concatenate([span["start"], span["end"]])
    steps = np.concatenate([np.ones(len(span)), -np.ones(len(span))])
    order = np.lexsort((steps, times))
    assert np.cumsum(steps[order]).max() <= 6
    assert extra["peak_live_versions"] > 1


def test_max_staleness_drops_exactly_the_updates_staler_than_it() -> None:
    loose, _ = plan(small_scenario(rounds=1, fleet=FLEET, aggregation=ASYNC))
    assert loose.rounds["staleness_max"].max() >= 2
    tight, _ = plan(small_scenario(rounds=1, fleet=FLEET, aggregation=ASYNC | {"max_staleness": 1}))
    ev, rounds = tight.events, tight.rounds
    assert (rounds["staleness_max"] <= 1).all()
    discarded = ev[ev["phase"] == "discarded"]
    assert len(discarded) > 0
    # each discarded session was on a version more than 1 behind the newest when it was dropped
    published = rounds["t_end"].to_numpy()
    for t, v in zip(discarded["t_start"], discarded["version"], strict=True):
        newest = int((published <= t).sum())
        assert newest - v > 1
    # and every aggregated update was within it
    taken = ev[(ev["phase"] == "agg_up") & (ev["round"] >= 0)]
    assert all(rounds.loc[r, "version"] - 1 - v <= 1 for r, v in zip(taken["round"], taken["version"], strict=True))


def test_async_ends_at_until_s() -> None:
    from hsplit_actors.summary import summarise

    tables, extra = plan(small_scenario(rounds=1, fleet=FLEET, aggregation={
        "mode": "async", "concurrency": 4, "buffer": 2, "until_s": 0.5}))
    assert tables.rounds["t_end"].max() < 0.5 and tables.events["t_end"].max() <= 0.5
    assert tables.events["t_end"].max() > tables.rounds["t_end"].max()  # sessions went on after the last one
    # the run lasted until_s: its virtual time, and the server's utilisation over it
    summary = summarise(tables, extra)
    assert extra["virtual_end_s"] == summary["virtual_time_s"] == 0.5
    assert summary["server_utilisation"] == pytest.approx(extra["server_busy_s"] / (extra["server_gpus"] * 0.5))


def test_async_ending_before_its_first_aggregation_warns_and_keeps_an_empty_rounds_table(
        write_scenario, tmp_path, capsys) -> None:
    """It was a KeyError traceback: the rounds table had no columns to read."""
    from hsplit_actors.engine.schedules.fedbuff import NothingAggregatedWarning

    base = small_scenario(rounds=1, fleet=FLEET, aggregation={"mode": "async", "concurrency": 4, "buffer": 2,
                                                            "aggregations": 1})
    full, _ = plan(base)
    first = float(full.rounds["t_end"].iloc[0])
    cut = base | {"aggregation": base["aggregation"] | {"aggregations": None, "until_s": first / 2}}
    with pytest.warns(NothingAggregatedWarning, match="no aggregation by until_s"):
        tables, _ = plan(cut)
    assert tables.rounds.empty and list(tables.rounds.columns) == list(full.rounds.columns)
    assert (tables.rounds.dtypes == full.rounds.dtypes).all()
    assert len(tables.events) and tables.events["t_end"].max() <= first / 2  # the work done so far is kept
    assert main(["plan", str(write_scenario(cut)), "--out", str(tmp_path / "p")]) == 0  # what a user sees
    out, err = capsys.readouterr()
    assert "warning: no aggregation by until_s" in err and "over 0 rounds" in out


def test_semi_sync_deadline_closes_rounds_and_drops_or_carries_late_clients() -> None:
    base = small_scenario(rounds=4, fleet=FLEET, local_iterations=2)
    sync, _ = plan(base)
    deadline = float(sync.rounds["round_s"].median()) * 0.6
    drop, _ = plan(base | {"aggregation": {"mode": "semi_sync", "deadline_s": deadline, "late": "drop"}})
    closes = drop.rounds["t_start"] + deadline
    assert (drop.rounds["t_end"] <= closes + 0.05).all()  # closed at the deadline (plus the aggregation itself)
    assert (drop.rounds["updates"] < drop.rounds["participants"]).any()
    assert drop.events["phase"].eq("discarded").any() and (drop.rounds["staleness_max"] == 0).all()
    carry, _ = plan(base | {"aggregation": {"mode": "semi_sync", "deadline_s": deadline, "late": "carry"}})
    assert not carry.events["phase"].eq("discarded").any()
    assert (carry.rounds["staleness_max"] >= 1).any()  # late updates joined a later aggregation
    early, _ = plan(base | {"aggregation": {"mode": "semi_sync", "min_updates": 3}})
    assert (early.rounds["updates"] >= 3).all()
    assert early.rounds["round_s"].mean() < sync.rounds["round_s"].mean()


def test_old_aggregation_interval_key_is_sync_with_that_interval() -> None:
    old, _ = plan(small_scenario(rounds=5, aggregation_interval=2))
    new, _ = plan(small_scenario(rounds=5, aggregation={"mode": "sync", "interval": 2}))
    pd.testing.assert_frame_equal(old.events, new.events)
    assert old.rounds["aggregated"].tolist() == [False, True, False, True, True]
    assert old.rounds["version"].tolist() == [0, 1, 1, 2, 3]


@pytest.mark.parametrize(("aggregation", "message"), [
    ({"mode": "sync", "buffer": 3}, "aggregation: `buffer` has no meaning in mode sync; it is for mode async"),
    ({"mode": "async", "concurrency": 2, "buffer": 3, "aggregations": 2}, "buffer 3 exceeds concurrency 2"),
    ({"mode": "semi_sync", "deadline_s": -1}, "aggregation.deadline_s: input should be greater than 0"),
    ({"mode": "async", "concurrency": 2, "buffer": 2}, "give `aggregations` (how many) or `until_s`"),
    ({"mode": "async", "buffer": 2, "aggregations": 1}, "mode async needs `concurrency`"),
    ({"mode": "semi_sync", "interval": 2}, "`interval` has no meaning in mode semi_sync; it is for mode sync"),
    ({"mode": "async", "concurrency": 9, "buffer": 9, "aggregations": 1},
     "aggregation.concurrency: concurrency 9 exceeds the 6 clients of the fleet"),
    ({"mode": "async", "concurrency": 2, "buffer": 2, "until_s": float("inf")},
     "aggregation.until_s: input should be a finite number"),
    ({"mode": "semi_sync", "late": "later"}, "aggregation.late: input should be 'drop' or 'carry'"),
    ({"mode": "sync", "staleness": "cubic"},
     "aggregation.staleness: input should be 'constant', 'polynomial' or 'hinge'"),
])
def test_contradictory_aggregation_settings_are_refused(aggregation, message, write_scenario, capsys) -> None:
    path = write_scenario(small_scenario(aggregation=aggregation))
    for command in ("validate", "plan"):
        assert main([command, str(path), "--quiet"] if command == "plan" else [command, str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_both_spellings_of_the_interval_must_agree(write_scenario, capsys) -> None:
    raw = small_scenario(aggregation_interval=2, aggregation={"mode": "async", "concurrency": 2, "buffer": 2,
                                                              "aggregations": 2})
    assert main(["validate", str(write_scenario(raw))]) == 2
    assert "aggregation_interval is the old spelling" in capsys.readouterr().err
