"""A run directory: resolved scenario, meta.json, Parquet tables; complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

from hsplit_actors import __version__
from hsplit_actors.scenario import dump_scenario
from hsplit_actors.scenario.schema import Scenario

TABLES = ("events", "rounds", "clients", "faults", "importance")
RUN_ONLY = ("faults", "importance")  # tables a timing-only plan has nothing to put in
FAULT_COLUMNS = ["round", "t", "actor", "what", "restored", "replayed_calls"]
IMPORTANCE_COLUMNS = ["round", "block", "matrix", "score", "raw", "clients"]  # IWI, smoothed score and raw mean


@dataclass
class RunTables:
    events: pd.DataFrame
    rounds: pd.DataFrame
    clients: pd.DataFrame
    faults: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FAULT_COLUMNS))
    importance: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=IMPORTANCE_COLUMNS))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def _versions() -> dict[str, str]:
    """Package versions for meta.json (looked up once per process: importlib.metadata parses files)."""
    found = {"python": platform.python_version(), "hsplit-actors": __version__}
    for name in ("simpy", "numpy", "pandas", "pyarrow", "torch", "transformers", "peft", "ray"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def new_run_dir(scenario: Scenario, mode: str, out: str | None) -> Path:
    """The directory a run will be written to (not created yet)."""
    if out:
        return Path(out)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path(scenario.output_dir) / f"{scenario.name}-{scenario.method.name}-{mode}-{stamp}"


def is_complete(directory: str | Path) -> bool:
    """A finished run: its meta.json is there and does not mark it interrupted."""
    meta = Path(directory) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("status") != "incomplete"
    except (ValueError, AttributeError):
        return False


def mark_incomplete(directory: Path, reason: str, checkpoint: Path) -> None:
    """An interrupted training run: meta.json says so, names its newest checkpoint and how to continue."""
    meta = {"status": "incomplete", "reason": reason, "last_checkpoint": str(checkpoint.relative_to(directory)),
            "stopped_at": datetime.now(UTC).isoformat(timespec="seconds"), "argv": sys.argv,
            "resume": f"hsplit run --resume {directory}"}
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))


def write_run(directory: Path, scenario: Scenario, tables: RunTables, mode: str, wall_s: float,
              extra_meta: dict | None = None) -> Path:
    """Write everything into a temporary sibling, then rename: a directory that exists is complete."""
    directory = Path(directory)
    in_progress = directory.exists() and not is_complete(directory) and {p.name for p in directory.iterdir()} <= {
        "checkpoints", "scenario.yaml", "meta.json"}  # a training run's, or one interrupted and resumed
    if directory.exists() and not in_progress:
        raise FileExistsError(f"run directory {directory} already exists; choose another --out")
    staging = directory.with_name(f".{directory.name}.incomplete")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        (staging / "scenario.yaml").write_text(dump_scenario(scenario))
        written = [name for name in TABLES if not (name in RUN_ONLY and mode == "plan")]  # plan trains nothing
        for name in written:
            getattr(tables, name).to_parquet(staging / f"{name}.parquet", index=False)
        meta = {
            "status": "complete", "mode": mode, "scenario": scenario.name, "method": scenario.method.name,
            "seed": scenario.seed,
            "git_commit": _git_commit(), "versions": dict(_versions()), "wall_s": wall_s,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "argv": sys.argv,
            "rows": {name: len(getattr(tables, name)) for name in written}, **(extra_meta or {}),
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        if in_progress:  # a training run's checkpoints stay with it
            for item in directory.iterdir():
                if item.name == "checkpoints":
                    item.rename(staging / item.name)
            shutil.rmtree(directory)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def read_run(directory: str | Path) -> RunTables:
    """Load a run directory's tables (what the notebooks call)."""
    directory = Path(directory)
    if not is_complete(directory):
        why = ("it was interrupted; continue it with hsplit run --resume DIR" if (directory / "meta.json").is_file()
               else "no meta.json")
        raise FileNotFoundError(f"{directory} is not a complete run directory ({why})")
    tables = {name: pd.read_parquet(directory / f"{name}.parquet") for name in TABLES
              if (directory / f"{name}.parquet").is_file()}
    return RunTables(**tables)


def timer() -> float:
    return time.perf_counter()
