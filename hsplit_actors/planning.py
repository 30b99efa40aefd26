"""`hsplit plan`: a timing-only simulation of a scenario (no weights, no training) into a run directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hsplit_actors.engine import ProgressCallback
from hsplit_actors.errors import ScenarioError
from hsplit_actors.preparation import Setup, prepare
from hsplit_actors.runs import RunTables, new_run_dir, write_run
from hsplit_actors.scenario.schema import Scenario
from hsplit_actors.simulation import simulate


def plan(scenario: Scenario, out: str | Path | None = None, on_progress: ProgressCallback | None = None,
         on_setup: Callable[[Setup], None] | None = None) -> tuple[Path, RunTables, dict]:
    """Simulate and write the run directory; returns (directory, tables, meta extras). `on_setup` is told once
    the scenario is checked, before the simulation starts."""
    setup = prepare(scenario)
    directory = new_run_dir(scenario, "plan", str(out) if out else None)
    if out and directory.exists():  # found before the work, not after it
        raise ScenarioError(f"run directory {directory} already exists; choose another --out")
    if on_setup is not None:
        on_setup(setup)
    tables, wall_s, extra = simulate(scenario, setup, on_progress=on_progress)
    directory = write_run(directory, scenario, tables, "plan", wall_s, extra, automatic=not out)
    return directory, tables, extra
