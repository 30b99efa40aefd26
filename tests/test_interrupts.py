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


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
                         ids=["SIGINT", "SIGTERM"])
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
