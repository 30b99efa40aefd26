"""`events: phase | iteration | none` (issue 22): the events table's resolution is the user's choice, and nothing
else depends on it. The rounds and clients tables and the summary are identical at all three; an iteration row
is exactly its phase rows folded; the table is written to Parquet in row groups without being built whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from hsplit_actors import timeline
from hsplit_actors.engine.session import PHASES
from hsplit_actors.planning import plan
from hsplit_actors.preparation import prepare
from hsplit_actors.runs import read_run
from hsplit_actors.scenario import parse_scenario
from hsplit_actors.simulation import simulate
from hsplit_actors.summary import summarise
from hsplit_actors.tables import EventRows
from tests.conftest import small_scenario

MODES = {
    "sync": {"mode": "sync"},
    "semi_sync": {"mode": "semi_sync", "min_updates": 4, "late": "carry"},
    "async": {"mode": "async", "concurrency": 4, "buffer": 2, "aggregations": 5, "staleness": "polynomial"},
}
# a mixed fleet: split, federated (k = L: no network or server phases) and a slow link that queues
MIXED = {"profiles": {"fast": {"flops": 1e13, "memory_gb": 4, "uplink_mbps": 1000, "downlink_mbps": 1000},
                      "slow": {"flops": 1e10, "memory_gb": 4, "uplink_mbps": 2, "downlink_mbps": 2}},
         "fleet": [{"profile": "fast", "count": 3}, {"profile": "slow", "count": 3}]}


def _simulated(mode: str, resolution: str, **changes):
    raw = small_scenario(aggregation=MODES[mode], events=resolution, **changes)
    scenario = parse_scenario(yaml.safe_dump(raw))
    return simulate(scenario, prepare(scenario))


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("method", [{"name": "sfl", "split_point": 2, "rank": 4},
                                    {"name": "hsplitlora", "ranks": [0, 2, 4], "max_client_share": 1.0,
                                     "allow_federated": True}])
def test_rounds_clients_and_summary_are_the_same_at_every_resolution(mode: str, method: dict) -> None:
    runs = {r: _simulated(mode, r, method=method, **MIXED) for r in ("phase", "iteration", "none")}
    tables, _, meta = runs["phase"]
    for resolution in ("iteration", "none"):
        other, _, other_meta = runs[resolution]
        pd.testing.assert_frame_equal(other.rounds.drop(columns="wall_s"), tables.rounds.drop(columns="wall_s"))
        pd.testing.assert_frame_equal(other.clients, tables.clients)
        wall = {"rounds_wall_s"}  # real seconds, the one thing that differs between two runs
        assert ({k: v for k, v in summarise(other, other_meta).items() if k not in wall}
                == {k: v for k, v in summarise(tables, meta).items() if k not in wall})
    assert len(runs["none"][0].events) == 0 and list(runs["none"][0].events.columns) == list(tables.events.columns)


@pytest.mark.parametrize("mode", list(MODES))
def test_an_iteration_row_is_its_phase_rows_folded(mode: str) -> None:
    phases = _simulated(mode, "phase", **MIXED)[0].events
    iterations = _simulated(mode, "iteration", **MIXED)[0].events
    # a client runs one iteration at a time and its phases come in order: a new iteration starts where the
    # client changes or its phase does not advance
    work = phases[phases["phase"].isin(PHASES)].sort_values(["client", "t_start"], kind="stable")
    code = work["phase"].cat.codes.to_numpy()
    client = work["client"].to_numpy()
    starts = np.r_[True, (client[1:] != client[:-1]) | (code[1:] <= code[:-1])]
    folded = work.groupby(np.cumsum(starts)).agg(
        round=("round", "first"), version=("version", "first"), client=("client", "first"),
        iteration=("iteration", "first"), t_start=("t_start", "min"), t_end=("t_end", "max"),
        bytes=("bytes", "sum"), flops=("flops", "sum"), queue_len=("queue_len", "sum"), batch=("batch", "sum"))
    rows = iterations[iterations["phase"] == "iteration"]
    assert len(rows) == len(folded) > 0
    columns = ["round", "version", "client", "iteration", "t_start", "t_end", "bytes", "queue_len", "batch"]
    got = rows.sort_values(["client", "t_start"], kind="stable").reset_index(drop=True)
    want = folded.reset_index(drop=True)
    pd.testing.assert_frame_equal(got[columns], want[columns].astype(got[columns].dtypes.to_dict()))
    np.testing.assert_allclose(got["flops"].to_numpy(), want["flops"].to_numpy(), rtol=1e-12)
    assert iterations["t_start"].is_monotonic_increasing
    # the other rows (transfers of versions and updates, the aggregation, dropouts) are the phase table's own
    others = ["round", "version", "client", "t_start", "t_end", "bytes"]
    pd.testing.assert_frame_equal(iterations[iterations["phase"] != "iteration"][others].reset_index(drop=True),
                                  phases[~phases["phase"].isin(PHASES)][others].reset_index(drop=True))


@pytest.mark.parametrize("resolution", ["phase", "iteration"])
def test_row_groups_stream_the_same_table(resolution: str, tmp_path: Path, monkeypatch) -> None:
    """Built a few rows at a time, the events table is the table built whole, in virtual-time order; written,
    it is that table in several Parquet row groups, and `write_run` never built it whole."""
    import hsplit_actors.tables as tables_module

    scenario = parse_scenario(yaml.safe_dump(small_scenario(aggregation=MODES["async"], events=resolution,
                                                            **MIXED)))
    whole = simulate(scenario, prepare(scenario))[0].events
    assert whole["t_start"].is_monotonic_increasing
    monkeypatch.setattr(tables_module, "ROW_GROUP", 7)
    tables = simulate(scenario, prepare(scenario))[0]
    parts = list(tables._events.chunks())
    assert len(parts) > 3 and all(len(p) <= 7 for p in parts)
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole)
    built = []
    monkeypatch.setattr(EventRows, "frame", lambda self: built.append(1) or pd.DataFrame())
    directory, _, _ = plan(scenario, tmp_path / "run")
    assert not built
    parquet = pq.ParquetFile(directory / "events.parquet")
    assert parquet.metadata.num_row_groups == len(parts)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(read_run(directory).events, whole)


def test_the_timeline_from_the_log_is_the_one_the_events_table_gives() -> None:
    """The summary's figures come from the log; read back from a phase-resolution table they are the same."""
    tables, _, _ = _simulated("async", "phase", **MIXED)
    from_log, from_table = tables.timeline, timeline.from_events(tables.events)
    assert from_log.iterations == from_table.iterations and from_log.queued == from_table.queued
    assert from_log.phase_s == pytest.approx(from_table.phase_s, rel=1e-12)
    assert from_log.queue_wait_s == pytest.approx(from_table.queue_wait_s, rel=1e-12)
    pd.testing.assert_frame_equal(from_log.finish.reset_index(drop=True), from_table.finish.reset_index(drop=True),
                                  check_dtype=False)


@pytest.mark.parametrize("mode", ["sync", "semi_sync"])
def test_a_rounds_queue_wait_is_the_mean_of_its_queue_rows(mode: str) -> None:
    tables, _, _ = _simulated(mode, "phase", **MIXED)
    queue = tables.events[tables.events["phase"] == "queue"]
    wait = (queue["t_end"] - queue["t_start"]).groupby(queue["round"]).mean()
    got = tables.rounds.set_index("round")["queue_wait_s"]
    assert (wait > 0).any()
    pd.testing.assert_series_equal(got.loc[wait.index], wait, check_names=False, check_index_type=False, rtol=1e-12)


def test_the_work_estimate_follows_the_resolution() -> None:
    """Fewer rows, less memory: a scenario refused at `phase` names the coarser tables as a way out."""
    from hsplit_actors.errors import ScenarioError
    from hsplit_actors.workload import check, estimate

    raw = small_scenario(fleet=[{"profile": "jetson_nano", "count": 100_000}], local_iterations=10)
    at = {r: estimate(parse_scenario(yaml.safe_dump(raw | {"events": r}))) for r in ("phase", "iteration", "none")}
    assert at["phase"].events > at["iteration"].events > at["none"].events == 0
    assert at["phase"].peak_bytes > at["iteration"].peak_bytes > at["none"].peak_bytes
    with pytest.raises(ScenarioError, match=r"events: iteration or none"):
        check(parse_scenario(yaml.safe_dump(raw)), memory=at["iteration"].peak_bytes)
    check(parse_scenario(yaml.safe_dump(raw | {"events": "iteration"})), memory=at["iteration"].peak_bytes)


def test_plan_takes_the_resolution_from_the_command_line(write_scenario, tmp_path: Path) -> None:
    from hsplit_actors.cli import main

    path = write_scenario(small_scenario())
    assert main(["plan", str(path), "--out", str(tmp_path / "r"), "--events", "iteration", "--quiet"]) == 0
    events = read_run(tmp_path / "r").events
    assert set(events["phase"].astype(str)) >= {"iteration"} and not events["phase"].isin(PHASES).any()
    with pytest.raises(SystemExit) as refused:
        main(["plan", str(path), "--events", "phases"])
    assert refused.value.code == 2
