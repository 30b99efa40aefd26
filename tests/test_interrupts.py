"""Ctrl-C and SIGTERM through real processes: one line, exit 130, a run directory that says it is incomplete and
resumes, nothing half-written, and no Ray process left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from tests.conftest import REPO, small_scenario, tiny_training_scenario

ENV = dict(os.environ, HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled")


def _ray_processes_since(start: float) -> list[str]:
    """Ray's daemons and workers started after `start` (the test session's own Ray is older)."""
    found = []
    for proc in psutil.process_iter(["create_time", "cmdline", "name"]):
        try:
            line = " ".join(proc.info["cmdline"] or [])
            if proc.info["create_time"] >= start - 1 and ("raylet" in line or "gcs_server" in line
                                                          or "default_worker.py" in line or "ray::" in line):
                found.append(f"{proc.pid} {line[:80]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _interrupt_when(args: list[str], ready, sig: int) -> tuple[int, str, list[str]]:
    """Start `hsplit args`, send `sig` once `ready()` holds; its exit code, stderr and leftover Ray processes."""
    start = time.time()
    # a shell that starts jobs in the background (CI's, or `make test &`) ignores SIGINT for them, and Python
    # keeps it ignored: the command gets the default disposition back, as in a terminal
    proc = subprocess.Popen([sys.executable, "-m", "hsplit_actors.cli", *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, f"the command ended before it could be interrupted: {proc.communicate()}"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    leftovers = []
    for _ in range(20):  # Ray's processes exit asynchronously once their driver disconnects
        leftovers = _ray_processes_since(start)
        if not leftovers:
            break
        time.sleep(0.5)
    return proc.returncode, err, leftovers


# a real process and a real signal (slow-marked for the 10-minute budget): make test keeps the deterministic
# interrupt right after the first checkpoint (below) and the interrupted plan's one line and exit code
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_says_so_in_one_line_and_resumes(sig: int, write_scenario, tmp_path: Path) -> None:
    scenario = write_scenario(tiny_training_scenario(rounds=40))
    out = tmp_path / "run"
    code, err, leftovers = _interrupt_when(
        ["run", str(scenario), "--out", str(out), "--quiet"],
        lambda: any((out / "checkpoints").glob("round_*.pt")), sig)
    assert code == 130
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted; {out} is kept up to round_") and f"hsplit run --resume {out}" in last
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert leftovers == [], leftovers
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "incomplete" and (out / meta["last_checkpoint"]).is_file()
    assert not (out / "events.parquet").exists()

    done = subprocess.run([sys.executable, "-m", "hsplit_actors.cli", "run", "--resume", str(out), "--local",
                           "--quiet"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["rows"]["rounds"] == 40


def test_an_interrupted_plan_writes_nothing(write_scenario, tmp_path: Path) -> None:
    """A plan holds everything in memory until it is done: interrupted, it leaves no directory at all."""
    raw = small_scenario(fleet=[{"profile": "jetson_nano", "count": 2_000}], rounds=100, local_iterations=10)
    runs = tmp_path / "runs"
    started = time.time()
    code, err, _ = _interrupt_when(["plan", str(write_scenario(raw)), "--output-dir", str(runs), "--quiet"],
                                   lambda: time.time() - started > 6, signal.SIGTERM)
    assert code == 130
    assert err.strip().splitlines()[-1] == "interrupted; nothing was written"
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.slow  # a minute: two runs, an interrupt, then the rest
def test_an_interrupted_comparison_resumes(write_scenario, tmp_path: Path) -> None:
    raw = tiny_training_scenario(rounds=6, compare={"methods": ["sfl", "splitlora"], "seeds": [0, 1],
                                                    "cpus_per_run": 1})
    out = tmp_path / "cmp"
    code, err, leftovers = _interrupt_when(
        ["compare", str(write_scenario(raw)), "--local", "--out", str(out), "--quiet"],
        lambda: any(out.glob("*/seed*/meta.json")), signal.SIGINT)
    assert code == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted with ") and f"hsplit compare --resume {out}" in last
    assert leftovers == [], leftovers
    done = subprocess.run([sys.executable, "-m", "hsplit_actors.cli", "compare", "--resume", str(out), "--local",
                           "--quiet"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    per_seed = pd.read_csv(out / "per_seed.csv")
    assert sorted(zip(per_seed["variant"], per_seed["seed"], strict=True)) == [
        ("sfl", 0), ("sfl", 1), ("splitlora", 0), ("splitlora", 1)]


def test_an_interrupt_right_after_the_first_checkpoint_keeps_it_and_resumes(tmp_path: Path) -> None:
    """Deterministic: the interrupt is raised by the progress callback, which runs once the first checkpoint is
    on disk (the same point the SIGINT test aims at by polling)."""
    from hsplit_actors.errors import Interrupted
    from hsplit_actors.scenario import parse_scenario
    from hsplit_actors.training.run import run

    scenario = parse_scenario(yaml.safe_dump(tiny_training_scenario(rounds=3, train={
        "eval_samples": 64, "lr": 0.01, "local": True})))
    out = tmp_path / "run"

    def ctrl_c_after_a_checkpoint(_progress) -> None:
        if any((out / "checkpoints").glob("round_*.pt")):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match=r"is kept up to round_0000\.pt"):
        run(scenario, out, on_progress=ctrl_c_after_a_checkpoint)
    assert json.loads((out / "meta.json").read_text())["status"] == "incomplete"
    directory, tables, _ = run(None, resume=out)
    assert directory == out and len(tables.rounds) == 3


def test_a_fresh_run_is_removed_only_while_it_holds_no_checkpoint(tmp_path: Path) -> None:
    """The interrupt's clean-up removes file by file: a checkpoint that arrived after the interrupt looked (the
    coordinator is still writing while it is being stopped) keeps the directory, and a cut-off write does not."""
    from hsplit_actors.training.run import _remove_if_nothing_kept

    kept = tmp_path / "kept"
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "checkpoints" / "round_0001.pt").write_bytes(b"complete")
    assert not _remove_if_nothing_kept(kept) and (kept / "checkpoints" / "round_0001.pt").is_file()
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    (cut / "scenario.yaml").write_text("name: x\n")
    (cut / "checkpoints" / ".round_0001.pt.tmp").write_bytes(b"half")
    assert _remove_if_nothing_kept(cut) and not cut.exists()


def test_runs_started_in_the_same_second_never_share_a_directory(tmp_path: Path) -> None:
    """Exclusive creation: concurrent claims of one automatic name all succeed, each with its own directory; a
    name the user chose is refused once taken."""
    from concurrent.futures import ThreadPoolExecutor

    from hsplit_actors.errors import ScenarioError
    from hsplit_actors.runs import claim

    name = tmp_path / "runs" / "x-sfl-plan-20261130-120000"
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: claim(name, automatic=True), range(16)))
    assert len(set(got)) == 16 and all(p.is_dir() for p in got)
    with pytest.raises(ScenarioError, match="already exists; choose another --out"):
        claim(name, automatic=False)


def test_two_plans_of_one_scenario_at_once_both_finish(write_scenario, tmp_path: Path) -> None:
    path = write_scenario(small_scenario(fleet=[{"profile": "jetson_nano", "count": 20}]))
    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "hsplit_actors.cli", "plan", str(path), "--output-dir", str(runs), "--quiet"]
    procs = [subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert [code for *_, code in results] == [0, 0, 0], results
    done = [d for d in runs.iterdir() if not d.name.startswith(".")]
    assert len(done) == 3 and all((d / "meta.json").is_file() for d in done), sorted(runs.iterdir())
