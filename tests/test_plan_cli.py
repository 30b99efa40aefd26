"""`hsplit plan` end to end: the run directory's contract (SPEC §7) and the shipped scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hsplit_actors.cli import main
from hsplit_actors.runs import read_run
from hsplit_actors.scenario import load_scenario
from tests.conftest import REPO, small_scenario


def test_plan_writes_a_complete_run_directory(write_scenario, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["plan", str(write_scenario(small_scenario())), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "virtual time" in printed and "server utilisation" in printed and "stragglers" in printed
    assert sorted(p.name for p in out.iterdir()) == ["clients.parquet", "events.parquet", "meta.json",
                                                    "rounds.parquet", "scenario.yaml"]  # faults: run only
    assert read_run(out).faults.empty
    meta = json.loads((out / "meta.json").read_text())
    assert meta["mode"] == "plan" and meta["seed"] == 1 and "simpy" in meta["versions"]
    tables = read_run(out)
    assert list(tables.events.columns) == ["run", "method", "round", "version", "client", "iteration", "phase",
                                           "t_start", "t_end", "bytes", "flops", "queue_len", "batch"]
    for column in ("round", "t_end", "wall_s", "train_loss", "eval_loss", "eval_metric", "participants",
                   "bytes_up", "bytes_down"):
        assert column in tables.rounds.columns
    for column in ("client", "device", "memory_gb", "split_point", "ranks", "trainable_params",
                   "memory_estimate_gb", "feasible"):
        assert column in tables.clients.columns
    ranks = json.loads(tables.clients["ranks"].iloc[0])
    assert ranks["query"] == [4, 4, 4, 4] and ranks["key"] == [0, 0, 0, 0]
    # the resolved scenario re-runs to identical tables
    again = tmp_path / "again"
    assert main(["plan", str(out / "scenario.yaml"), "--out", str(again), "--quiet"]) == 0
    pd.testing.assert_frame_equal(read_run(again).events, tables.events)
    # and an existing directory is never overwritten
    assert main(["plan", str(out / "scenario.yaml"), "--out", str(out), "--quiet"]) == 2


def test_resolved_scenario_has_every_default(write_scenario, tmp_path: Path) -> None:
    out = tmp_path / "run"
    main(["plan", str(write_scenario(small_scenario())), "--out", str(out), "--quiet"])
    text = (out / "scenario.yaml").read_text()
    for default in ("mode: sync", "queue: fifo", "variant: v1", "dtype: float32", "kind: iid"):
        assert default in text


@pytest.mark.parametrize("name", ["quickstart", "paper_fleet", "fleet_10k"])
def test_shipped_scenarios_validate(name: str) -> None:
    scenario = load_scenario(REPO / "scenarios" / f"{name}.yaml")
    devices = sum(g.count for g in scenario.fleet)
    assert devices == {"quickstart": 12, "paper_fleet": 5, "fleet_10k": 10_000}[name]


def test_paper_fleet_budgets_are_the_papers(tmp_path: Path, capsys) -> None:
    out = tmp_path / "paper"
    assert main(["plan", str(REPO / "scenarios" / "paper_fleet.yaml"), "--out", str(out), "--quiet"]) == 0
    clients = read_run(out).clients
    assert len(clients) == 5
    assert clients["memory_gb"].between(5, 20).all()
    assert (clients["memory_estimate_gb"] <= clients["memory_gb"]).all()
    assert clients["split_point"].nunique() > 1  # stronger device types run deeper splits
