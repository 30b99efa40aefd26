"""A run directory: resolved scenario, meta.json, Parquet tables; complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

from hsplit_actors import __version__
from hsplit_actors.errors import ScenarioError
from hsplit_actors.scenario import dump_scenario
from hsplit_actors.scenario.schema import Scenario

TABLES = ("events", "rounds", "clients", "faults", "importance")
RUN_ONLY = ("faults", "importance")  # tables a timing-only plan has nothing to put in
KEPT = ("checkpoints", "model", "tensorboard")  # what a training run writes into its directory before the tables
FAULT_COLUMNS = ["round", "t", "actor", "what", "restored", "replayed_calls"]
IMPORTANCE_COLUMNS = ["round", "block", "matrix", "score", "raw", "clients"]  # IWI, smoothed score and raw mean


class RunTables:
    """A run's tables. `events` may be given as `tables.EventRows` (a simulation's, not yet built): `write_run`
    streams it to Parquet a row group at a time, and it is built whole only when `events` is read. `timeline`:
    the phase figures the summary needs, from the simulation log (None for a run read back from disk)."""

    def __init__(self, events, rounds: pd.DataFrame, clients: pd.DataFrame, faults: pd.DataFrame | None = None,
                 importance: pd.DataFrame | None = None, timeline=None):
        self._events, self.rounds, self.clients = events, rounds, clients
        self.faults = pd.DataFrame(columns=FAULT_COLUMNS) if faults is None else faults
        self.importance = pd.DataFrame(columns=IMPORTANCE_COLUMNS) if importance is None else importance
        self.timeline = timeline

    @property
    def events(self) -> pd.DataFrame:
        if not isinstance(self._events, pd.DataFrame):
            self._events = self._events.frame()
        return self._events

    @events.setter
    def events(self, frame: pd.DataFrame) -> None:
        self._events = frame

    def rows(self, name: str) -> int:
        return len(self._events) if name == "events" else len(getattr(self, name))

    def write(self, name: str, path: Path) -> None:
        """One table as Parquet; the events in row groups, as they are built, when they were not built yet."""
        if name != "events" or isinstance(self._events, pd.DataFrame):
            getattr(self, name).to_parquet(path, index=False)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        try:
            for chunk in self._events.chunks():
                table = pa.Table.from_pandas(chunk, preserve_index=False)
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()


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
    """The directory a run will be written to (not created yet; `claim` creates it)."""
    if out:
        return Path(out)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path(scenario.output_dir) / f"{scenario.name}-{scenario.method.name}-{mode}-{stamp}"


def claim(directory: Path, automatic: bool) -> Path:
    """Create `directory` exclusively, so two commands never share one. A name the user chose (--out) that exists
    is refused; an automatic one (a timestamp) that another command took this second gets a suffix -2, -3, ..."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        candidate = directory if n == 1 else directory.with_name(f"{directory.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            if not automatic:
                break
    raise ScenarioError(f"run directory {directory} already exists; choose another --out")


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
              extra_meta: dict | None = None, automatic: bool = False, claimed: bool = False) -> Path:
    """Write everything into a private temporary sibling, then rename it onto the run's directory: a run directory
    with tables in it is complete. `claimed`: the caller created the directory already (a training run, which
    keeps its checkpoints there); otherwise it is claimed here (see `claim`, and `automatic`). Returns where the
    run went, which for an automatic name may carry a suffix."""
    directory = Path(directory)
    if not claimed:
        directory = claim(directory, automatic)  # empty and ours: the rename below replaces it
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".incomplete", dir=directory.parent))
    staging.chmod(directory.stat().st_mode)  # mkdtemp's is owner-only; the run directory keeps the usual one
    try:
        (staging / "scenario.yaml").write_text(dump_scenario(scenario))
        written = [name for name in TABLES if not (name in RUN_ONLY and mode == "plan")]  # plan trains nothing
        for name in written:
            tables.write(name, staging / f"{name}.parquet")
        meta = {
            "status": "complete", "mode": mode, "scenario": scenario.name, "method": scenario.method.name,
            "seed": scenario.seed,
            "git_commit": _git_commit(), "versions": dict(_versions()), "wall_s": wall_s,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "argv": sys.argv,
            "rows": {name: tables.rows(name) for name in written}, **(extra_meta or {}),
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        for item in directory.iterdir():  # a training run's checkpoints and model stay with it; the rest is rewritten
            if item.name in KEPT:
                item.rename(staging / item.name)
            else:
                item.unlink()
        staging.rename(directory)  # onto an empty directory, atomically: the name is never free in between
    except BaseException:
        for name in KEPT:  # never lose a checkpoint or a model: they go back where they were
            if (staging / name).exists():
                (staging / name).rename(directory / name)
        if (directory / "checkpoints").exists() and not (directory / "scenario.yaml").exists():  # still resumable
            shutil.copy(staging / "scenario.yaml", directory / "scenario.yaml")
        shutil.rmtree(staging, ignore_errors=True)
        if not claimed:
            with contextlib.suppress(OSError):
                directory.rmdir()  # the name this call claimed, still empty
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
