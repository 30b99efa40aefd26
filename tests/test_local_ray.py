"""A local run opens no door: Ray's listeners on loopback only, Ray's authentication at its default with a token
made for the run (owner-only, removed after), nothing written to the user's ~/.ray."""

from __future__ import annotations

import ast
import ipaddress
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.conftest import REPO, tiny_training_scenario

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _listeners(root: int) -> set[tuple[str, str, int]]:
    """(process, address, port) of every listening socket of `root` and its descendants (Ray's daemons are
    started by the driver)."""
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    pids = {p.pid: p for p in procs}
    found = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = pids[conn.pid].name()
            except psutil.NoSuchProcess:
                continue
            found.add((name, conn.laddr.ip, conn.laddr.port))
    return found


def test_a_local_run_listens_on_loopback_only_and_authenticates_with_its_own_token(write_scenario,
                                                                                  tmp_path: Path) -> None:
    import yaml

    scenario = write_scenario(yaml.safe_dump(tiny_training_scenario(rounds=4, progress=True)))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {
        "HF_HUB_OFFLINE": "1", "HOME": str(home)}  # Ray's default authentication, a user without a token
    out = tmp_path / "run"
    before = set(Path(tempfile.gettempdir()).glob("hsplit-ray-auth-*"))
    proc = subprocess.Popen([sys.executable, "-m", "hsplit_actors.cli", "run", str(scenario), "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[tuple[str, str, int]] = set()
    tokens: set[Path] = set()
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        seen |= _listeners(proc.pid)
        tokens |= set(Path(tempfile.gettempdir()).glob("hsplit-ray-auth-*")) - before
        for folder in tokens:
            if (folder / "auth_token").exists():
                assert stat.S_IMODE(folder.stat().st_mode) == 0o700
                assert stat.S_IMODE((folder / "auth_token").stat().st_mode) == 0o600
        time.sleep(0.3)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert any(name == "gcs_server" for name, _, _ in seen) and any(name == "raylet" for name, _, _ in seen), seen
    assert {(n, ip, p) for n, ip, p in seen if ip not in LOOPBACK and not ipaddress.ip_address(ip).is_loopback} == set()
    assert len(tokens) == 1 and not any(t.exists() for t in tokens)  # made for the run, gone after it
    assert not (home / ".ray").exists()
    said = err.strip().splitlines()  # no terminal: the estimate, a line per round, nothing of Ray's
    assert said[0].startswith("estimate:") and all(line.startswith("round ") for line in said[1:]), said
    meta = json.loads((out / "meta.json").read_text())
    startup = meta["startup"]  # the Ray it started counts as start-up
    assert startup["ray_s"] > 0.3 and startup["coordinator_start_s"] > 0 and startup["other_s"] >= 0, startup
    # the server actor made the assets and wrote the model: the coordinator never imported transformers or peft
    assert meta["coordinator_libraries"] == ["torch"] and meta["model"] == "model/adapter", meta


STOP = """
import os, psutil, ray
from hsplit_actors.training.run import connect, disconnect
connect(None)
node = ray._private.worker._global_node
print(sorted(node.all_processes))
children = psutil.Process(os.getpid()).children(recursive=True)
print(sorted({part.rsplit("/", 1)[-1] for p in children for part in p.cmdline() if part.endswith(".py")}))
disconnect()
print(sorted(p.pid for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE))
"""


def test_a_local_ray_starts_without_the_daemons_a_run_never_uses_and_leaves_nothing() -> None:
    """Ray's API server, autoscaler monitor and log monitor are not started (each a Python process importing Ray
    on a start-up that is CPU-bound on two cores); only the GCS and the raylet (which starts its agents) run, and
    after the shutdown nothing Ray started runs, and nothing was said. Fails too when a Ray upgrade moves the
    private start-up `lean_start` relies on (Ray then starts as before)."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", STOP], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    kinds, scripts, left = done.stdout.splitlines()
    assert kinds == "['gcs_server', 'raylet']", done.stdout
    assert not {"dashboard.py", "monitor.py", "log_monitor.py"} & set(ast.literal_eval(scripts)), scripts
    assert left == "[]", done.stdout
    assert "autoscaler" not in done.stderr.lower() and "dashboard" not in done.stderr.lower(), done.stderr[-2000:]


def test_the_driver_of_a_run_on_ray_imports_neither_torch_nor_transformers(write_scenario, tmp_path: Path) -> None:
    """`hsplit run`'s own process only starts Ray, waits and writes tables: torch costs it a second to import
    (a TorchVersion in the hosts' device info once did that, when the driver unpickled meta)."""
    import yaml

    scenario = write_scenario(yaml.safe_dump(tiny_training_scenario(rounds=1)))
    code = ("import sys; from hsplit_actors.cli import main; "
            f"code = main(['run', {str(scenario)!r}, '--out', {str(tmp_path / 'run')!r}, '--quiet']); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)); sys.exit(code)")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "[]", done.stdout
