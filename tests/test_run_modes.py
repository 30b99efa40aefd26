"""SPEC §9 in real training: every method in every mode; nothing trained between aggregations is thrown away;
async with buffer = concurrency = every client trains exactly as sync, and so does semi_sync without a deadline;
tables are identical on one or two client actors and in-process; faults and --resume work per aggregation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hsplit_actors.training.run import run
from tests.conftest import run_scenario, tiny_training_scenario
from tests.test_run import _same_tables, interrupted_copy
from tests.test_run_methods import MIXED

ASYNC = {"mode": "async", "concurrency": 3, "buffer": 2, "aggregations": 4, "staleness": "polynomial"}
METRICS = ["train_loss", "eval_loss", "eval_metric"]




@pytest.mark.parametrize("method", [{"name": "fedit", "rank": 4},
                                    {"name": "splitlora", "rank": 4, "split_point": 1},
                                    {"name": "sfl", "rank": 4, "split_point": 2, "variant": "v1"}])
def test_one_client_aggregating_every_second_round_ends_as_aggregating_every_round(method, tmp_path) -> None:
    """With one client, aggregation is the identity: its adapters, optimiser state and the server side must go
    on untouched between aggregations (the bug: each round reloaded the global adapters and threw away the
    previous round's training; fedit ended 2e-3 apart in eval loss)."""
    raw = tiny_training_scenario(fleet=[{"profile": "agx_orin"}], method=method, rounds=2, local_iterations=4,
                                 train={"eval_samples": 64, "lr": 0.01, "local": True, "eval_every": 2})
    _, every, _ = run_scenario(raw, tmp_path / "every")
    _, second, _ = run_scenario(raw | {"aggregation": {"mode": "sync", "interval": 2}}, tmp_path / "second")
    assert second.rounds["aggregated"].tolist() == [False, True]
    final = every.rounds["eval_loss"].iloc[-1]
    assert np.isfinite(final)
    assert second.rounds["eval_loss"].iloc[-1] == pytest.approx(final, abs=1e-5)


def test_hsplitlora_reloads_and_restarts_nothing_between_aggregations(tmp_path, monkeypatch) -> None:
    """NAA restarts adapters after it merges, so aggregating is not the identity; between aggregations (interval
    3) clients keep their adapters and the shared server set goes on: one load per client, one restart per
    version."""
    from hsplit_actors.training.hosts import ClientHost, ServerHost

    calls = {"load_client": 0, "load_shared": 0}
    for cls, name in ((ClientHost, "load_client"), (ServerHost, "load_shared")):
        original = getattr(cls, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, counted)
    raw = tiny_training_scenario(**MIXED, rounds=3, aggregation={"mode": "sync", "interval": 3},
                                 train={"eval_samples": 32, "lr": 0.01, "local": True})
    _, tables, _ = run_scenario(raw, tmp_path / "interval")
    assert tables.rounds["aggregated"].tolist() == [False, False, True]
    assert calls == {"load_client": 4, "load_shared": 2}  # version 0, and fresh after version 1


@pytest.mark.parametrize("case", ["sfl", "hsplitlora"])
def test_async_of_every_client_and_semi_sync_without_deadline_train_exactly_as_sync(case, tmp_path) -> None:
    raw = tiny_training_scenario(**(MIXED if case == "hsplitlora" else {}), rounds=3,
                                 train={"eval_samples": 32, "lr": 0.01, "local": True})
    _, sync, _ = run_scenario(raw, tmp_path / "sync")
    everyone = {"mode": "async", "concurrency": 4, "buffer": 4, "aggregations": 3}
    _, asyn, _ = run_scenario(raw | {"aggregation": everyone}, tmp_path / "async")
    _, semi, _ = run_scenario(raw | {"aggregation": {"mode": "semi_sync"}}, tmp_path / "semi")
    for other in (asyn, semi):
        pd.testing.assert_frame_equal(sync.events, other.events)
        pd.testing.assert_frame_equal(sync.rounds[["round", "version", "t_end", *METRICS]],
                                      other.rounds[["round", "version", "t_end", *METRICS]])


@pytest.mark.parametrize("method", [
    {"name": "hsplitlora", "ranks": [0, 2, 4]}, {"name": "splitlora", "rank": 4, "split_point": 1},
    {"name": "fedit", "rank": 4}, {"name": "hetlora", "ranks": [2, 4]}, {"name": "flora", "ranks": [2, 4]},
    {"name": "sfl", "rank": 4, "split_point": 2, "variant": "v1"}, {"name": "cenlora", "rank": 4},
])
def test_every_method_trains_asynchronously_on_stale_versions(method, tmp_path) -> None:
    fleet = [{"profile": "jetson_nano", "count": 2, "memory_gb": 0.00993}, {"profile": "agx_orin", "count": 2}]
    raw = tiny_training_scenario(fleet=fleet, method=method, aggregation=ASYNC,
                                 train={"eval_samples": 32, "lr": 0.01, "local": True})
    _, tables, extra = run_scenario(raw, tmp_path / method["name"])
    rounds = tables.rounds
    assert rounds["version"].tolist() == [1, 2, 3, 4] and (rounds["updates"] == 2).all()
    if method["name"] != "cenlora":  # clients that lap others bring updates on older versions
        assert rounds["staleness_max"].max() >= 1
    # the global model moves with the versions (train_loss is NaN for an aggregation with no step since the last)
    assert rounds["eval_loss"].nunique() == 4 and np.isfinite(rounds[["eval_loss", "eval_metric"]]).all().all()
    if method["name"] in ("hsplitlora", "flora"):
        assert max(extra["version_bases_mb_peak"]["client_hosts"]) > 0  # bases of older versions were kept


def test_semi_sync_deadline_trains_with_late_work_carried(tmp_path) -> None:
    raw = tiny_training_scenario(**MIXED, rounds=3, train={"eval_samples": 32, "lr": 0.01, "local": True})
    _, sync, _ = run_scenario(raw, tmp_path / "sync")
    _, semi, _ = run_scenario(raw | {"aggregation": {"mode": "semi_sync", "min_updates": 2, "late": "carry"}},
                      tmp_path / "semi")
    assert (semi.rounds["staleness_max"] >= 1).any()
    assert np.isfinite(semi.rounds[METRICS].to_numpy()).all()
    assert semi.rounds["t_end"].iloc[-1] < sync.rounds["t_end"].iloc[-1]


@pytest.mark.parametrize("aggregation", [ASYNC, pytest.param({"mode": "semi_sync", "min_updates": 2, "late": "carry"},
                                                              marks=pytest.mark.slow)])
def test_tables_are_identical_with_one_or_two_client_actors_and_in_process(ray_session, tmp_path, aggregation):
    raw = tiny_training_scenario(**MIXED, aggregation=aggregation, rounds=3,
                                 train={"eval_samples": 32, "lr": 0.01})
    _, local, _ = run_scenario(raw, tmp_path / "local", local=True)
    _, two, _ = run_scenario(raw, tmp_path / "two", actors=2)  # (one actor against two: tests/test_run.py, sync)
    _same_tables(local, two)


def test_async_resumes_from_an_aggregation_with_sessions_in_flight(tmp_path) -> None:
    raw = tiny_training_scenario(**MIXED, aggregation=ASYNC | {"aggregations": 5},
                                 train={"eval_samples": 32, "lr": 0.01, "local": True, "keep_checkpoints": None})
    full_dir, full, _ = run_scenario(raw, tmp_path / "full")
    cut = interrupted_copy(full_dir, tmp_path / "cut", rounds=3)
    _, resumed, extra = run(None, resume=cut)
    assert extra["resumed_from_round"] == 2
    _same_tables(full, resumed)


@pytest.mark.slow  # 10-minute budget; the sync recovery law stays in make test (tests/test_run.py)
def test_async_survives_a_killed_client_actor_mid_flight(ray_session, tmp_path) -> None:
    raw = tiny_training_scenario(**MIXED, aggregation=ASYNC, train={"eval_samples": 32, "lr": 0.01, "actors": 2})
    _, clean, _ = run_scenario(raw, tmp_path / "clean", local=True)
    faulty = raw | {"train": raw["train"] | {"kill_actor": [{"round": 2, "after_steps": 2, "actor": 1}]}}
    _, tables, extra = run_scenario(faulty, tmp_path / "faulty")
    assert extra["faults"] == 1
    _same_tables(clean, tables)
