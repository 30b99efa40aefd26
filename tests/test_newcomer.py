"""What a newcomer reads: the summary's words, progress without a terminal, plots with honest axes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hsplit_actors.cli import main
from hsplit_actors.preparation import prepare
from hsplit_actors.scenario import parse_scenario
from hsplit_actors.simulation import simulate
from tests.conftest import ENV_OFFLINE, REPO, small_scenario, tiny_training_scenario


def _planned(write_scenario, tmp_path: Path, **changes):
    from hsplit_actors.runs import read_run

    out = tmp_path / "plan"
    assert main(["plan", str(write_scenario(small_scenario(**changes))), "--out", str(out), "--quiet"]) == 0
    return read_run(out)


def test_the_summary_counts_in_words_and_says_what_its_times_are(write_scenario, tmp_path: Path) -> None:
    from hsplit_actors.summary import render, summarise

    tables = _planned(write_scenario, tmp_path, rounds=1, fleet=[{"profile": "jetson_nano", "count": 1}])
    text = render(summarise(tables, {}), "d")
    assert "over 1 round " in text and "1 participant per round" in text and "0 dropouts" in text
    assert "1 rounds" not in text and "1 participants" not in text
    tables.rounds["eval_metric"], tables.rounds["eval_loss"], tables.rounds["train_loss"] = 0.8, 0.5, 0.4
    tables.faults = pd.DataFrame([{"round": 0, "t": 1.0, "actor": "client actor 1", "what": "RayActorError",
                                   "restored": "state after version 0", "replayed_calls": 3}])
    text = render(summarise(tables, {"metric": "accuracy", "train_s": 12.0, "startup_s": 5.0}), "d")
    assert "trained in 12.00 s after 5.00 s of start-up" in text and "wall time" not in text
    assert "faults: 1 lost actor recovered (client actor 1)" in text
    tables.rounds["train_loss"] = float("nan")  # no step had a loss (all NaN): said, not a traceback
    text = render(summarise(tables, {"metric": "accuracy"}), "d")
    assert "model: train loss none, eval loss 0.5000, accuracy 0.8000" in text


def test_without_a_terminal_a_run_says_a_line_per_round(write_scenario, tmp_path: Path) -> None:
    """(With Ray, that nothing else is said: tests/test_local_ray.py.)"""

    raw = tiny_training_scenario(rounds=3, progress=True)
    done = subprocess.run([sys.executable, "-m", "hsplit_actors.cli", "run", str(write_scenario(yaml.safe_dump(raw))),
                           "--out", str(tmp_path / "r"), "--local"], cwd=REPO, env=ENV_OFFLINE, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("estimate:")
    assert [line.split()[1] for line in lines[1:]][-1] == "3/3", lines
    assert all(line.startswith("round ") and "loss" in line for line in lines[1:]), lines
    # where it ran, in the summary and in meta.json
    import json

    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["server_device"]["device"].startswith("CPU: ") and meta["server_device"]["torch"]
    assert f"server computed on {meta['server_device']['device']}" in done.stdout
    threads = meta["server_device"]["threads"]
    assert f"CUDA -, {threads} thread{'' if threads == 1 else 's'}); " in done.stdout
    # --local imports torch & co. in this process, during start-up: counted as imports, not as after the last step
    assert meta["startup"]["coordinator_import_s"] > 0.5, meta["startup"]
    assert "of start-up: imports " in done.stdout and "Ray 0.00 s" not in done.stdout


@pytest.mark.parametrize("read_every", [1, 7])
@pytest.mark.parametrize("aggregation", [{"mode": "sync"},
                                         {"mode": "async", "concurrency": 4, "buffer": 2, "aggregations": 5}])
def test_a_line_per_round_gives_that_rounds_end_however_late_it_is_read(read_every, aggregation, capsys) -> None:
    """On Ray the driver reads the coordinator's progress every half second, when the clock has moved on: each
    line must still say its own round's virtual end, and the last round is always said."""
    from hsplit_actors.cli import _PlainProgress

    seen = []
    raw = small_scenario(rounds=5, aggregation=aggregation, progress=True)
    with _PlainProgress(every_s=0.0) as plain:
        def read(p) -> None:  # a reader that sees only every `read_every`-th report
            seen.append(p)
            if len(seen) % read_every == 0:
                plain(p)

        scenario = parse_scenario(yaml.safe_dump(raw))
        tables, _, _ = simulate(scenario, prepare(scenario), on_progress=read)
        plain.latest = seen[-1]  # what the driver holds when the command ends
    lines = capsys.readouterr().err.strip().splitlines()
    said = {int(line.split()[1].split("/")[0]): float(line.split("t=")[1].split("s")[0].replace(",", ""))
            for line in lines}
    assert max(said) == len(tables.rounds)  # the last is said
    for number, t in said.items():
        assert t == pytest.approx(tables.rounds["t_end"].iloc[number - 1], abs=0.05), lines


def test_an_empty_server_queue_plots_from_zero_whole_jobs() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from hsplit_actors.plotting import server_timeline

    events = pd.DataFrame({"phase": ["client_fwd"], "t_start": [0.0], "t_end": [1.0], "client": [0], "round": [0]})
    ax = server_timeline(events)
    low, high = ax.get_ylim()
    assert low == 0 and high >= 1 and all(float(t).is_integer() for t in ax.get_yticks())


@pytest.mark.parametrize("horizon", [30.0, 400.0, 1e5])
def test_the_comparison_time_axis_has_ticks_to_read(horizon: float) -> None:
    from hsplit_actors.comparison.report import curves_figure

    t = np.linspace(0.5, horizon, 20)
    fig, ax = curves_figure({"a": [(t, np.linspace(0.5, 0.9, 20))], "b": [(t, np.linspace(0.4, 0.8, 20))]},
                            "accuracy", 0.8)
    fig.canvas.draw()
    low, high = ax.get_xlim()
    assert len([x for x in ax.get_xticks() if low <= x <= high]) >= 4, ax.get_xticks()


def test_a_run_says_where_its_start_up_went(tmp_path: Path) -> None:
    """meta.json breaks start-up into Ray, the model and data, the hosts and the rest, adding up to it; the summary
    prints the parts."""
    from hsplit_actors.summary import render, summarise
    from tests.conftest import run_scenario

    _, tables, extra = run_scenario(tiny_training_scenario(rounds=1), tmp_path / "r", local=True)
    parts = extra["startup"]
    assert set(parts) == {"ray_s", "coordinator_start_s", "coordinator_import_s", "model_and_data_s", "hosts_s",
                          "other_s"}
    # in-process: no Ray, no coordinator process (this process imports, unless a test before it did: see
    # test_without_a_terminal_a_run_says_a_line_per_round for a fresh process)
    assert parts["ray_s"] == parts["coordinator_start_s"] == 0.0 and parts["coordinator_import_s"] >= 0
    assert parts["model_and_data_s"] > 0 and sum(parts.values()) == pytest.approx(extra["startup_s"])
    line = next(x for x in render(summarise(tables, extra), "d").splitlines() if "of start-up" in x)
    assert "of start-up: imports " in line and "Ray" not in line and "coordinator process" not in line, line
    assert extra["host_startup_s"] == {"client_hosts": [{}], "server": {}}  # in-process hosts start with the run
