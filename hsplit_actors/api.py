"""The Python API: the CLI's five commands as functions. Each takes a scenario as a path, a `Scenario` or a dict,
returns what the command wrote, and raises `ScenarioError` with the one line the CLI prints (`Interrupted` on
Ctrl-C). Warnings (what `hsplit` prints as `warning: ...`) are Python warnings."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hsplit_actors import workload
from hsplit_actors.engine import ProgressCallback
from hsplit_actors.errors import ScenarioError
from hsplit_actors.runs import RunTables
from hsplit_actors.scenario.schema import Scenario

ScenarioLike = str | Path | Scenario | dict[str, Any]


@dataclass(frozen=True)
class Run:
    """A finished run directory: where it is, its tables and its meta.json."""

    directory: Path
    tables: RunTables
    meta: dict

    @property
    def events(self) -> pd.DataFrame:
        return self.tables.events

    @property
    def rounds(self) -> pd.DataFrame:
        return self.tables.rounds

    @property
    def clients(self) -> pd.DataFrame:
        return self.tables.clients

    @property
    def faults(self) -> pd.DataFrame:
        return self.tables.faults

    @property
    def importance(self) -> pd.DataFrame:
        return self.tables.importance


@dataclass(frozen=True)
class Comparison:
    """A finished comparison: its directory, the per-variant table (comparison.csv) and one row per run."""

    directory: Path
    table: pd.DataFrame
    per_seed: pd.DataFrame


def load(scenario: ScenarioLike) -> tuple[Scenario, str]:
    """A validated Scenario and the name its errors are reported under."""
    from hsplit_actors.scenario import load_scenario, parse_scenario

    if isinstance(scenario, Scenario):
        return scenario, scenario.name
    if isinstance(scenario, dict):
        import yaml

        return parse_scenario(yaml.safe_dump(scenario, sort_keys=False)), "<scenario>"
    if isinstance(scenario, str | Path):
        return load_scenario(scenario), str(scenario)
    raise ScenarioError(f"a scenario is a file path, a Scenario or a dict, not {type(scenario).__name__}")


def checks(scenario: Scenario, source: str) -> tuple[workload.Workload, int]:
    """Everything `validate` checks: the work estimate, budgets, feasibility, server memory and every variant a
    comparison would run. Returns the estimate and the number of runs `compare` would make."""
    from hsplit_actors.comparison.variants import check_all
    from hsplit_actors.preparation import prepare

    work = workload.check(scenario, source)  # before the fleet is sampled: it may not fit
    try:
        prepare(scenario)  # the fleet's draws (a lognormal beyond the float range)
        runs = check_all(scenario)
    except ScenarioError as exc:
        if exc.source is None:  # a draw's or a variant's error: say which file it is in
            raise ScenarioError(str(exc), source=source) from None
        raise
    return work, runs


def validate(scenario: ScenarioLike) -> Scenario:
    """Check a scenario as `hsplit validate` does; returns it with every default filled in."""
    scenario, source = load(scenario)
    checks(scenario, source)
    return scenario


def read_run(directory: str | Path) -> Run:
    """A complete run directory's tables and meta (an interrupted one is refused, saying how to resume it)."""
    from hsplit_actors.runs import read_run as read_tables

    try:
        tables = read_tables(directory)
    except FileNotFoundError as exc:
        raise ScenarioError(str(exc)) from None
    return Run(Path(directory), tables, json.loads((Path(directory) / "meta.json").read_text()))


def plan(scenario: ScenarioLike, out: str | Path | None = None, *,
         on_progress: ProgressCallback | None = None) -> Run:
    """`hsplit plan`: simulate the timing only and write a run directory (under the scenario's output_dir, or
    `out`)."""
    from hsplit_actors.planning import plan as simulate

    scenario, source = load(scenario)
    workload.check(scenario, source)
    directory, _, _ = simulate(scenario, out, on_progress=on_progress)
    return read_run(directory)


def run(scenario: ScenarioLike | None = None, out: str | Path | None = None, *, address: str | None = None,
        local: bool | None = None, resume: str | Path | None = None,
        on_progress: ProgressCallback | None = None) -> Run:
    """`hsplit run`: train for real on Ray actors (`local=True`: in this process) and write a run directory;
    `resume`: continue an interrupted run directory instead of starting `scenario`."""
    from hsplit_actors.training.run import resume_state
    from hsplit_actors.training.run import run as train

    if resume is not None:
        if scenario is not None:
            raise ScenarioError("give a scenario or resume=DIR, not both")
        scenario, source = resume_state(resume)[0], str(resume)
    elif scenario is None:
        raise ScenarioError("give a scenario, or resume=DIR to continue an interrupted run")
    else:
        scenario, source = load(scenario)
    if local is not None:
        scenario = scenario.model_copy(update={"train": scenario.train.model_copy(update={"local": local})})
    workload.check(scenario, source)
    directory, _, _ = train(scenario, out, address, on_progress=on_progress, resume=resume)
    return read_run(directory)


def compare(scenario: ScenarioLike | None = None, out: str | Path | None = None, *, methods: str | None = None,
            address: str | None = None, plan_only: bool = False, resume: str | Path | None = None,
            on_progress: Callable[[str, int], None] | None = None) -> Comparison:
    """`hsplit compare`: tune, run every variant and seed, and tabulate them. `on_progress(key, total)` is told
    each finished run."""
    from hsplit_actors.comparison import compare as sweep

    loaded = None if scenario is None else load(scenario)[0]
    if (loaded is None) == (resume is None):
        raise ScenarioError("give a scenario, or resume=DIR to continue an interrupted comparison")
    directory, table = sweep(loaded, methods, out, address, plan_only, resume, on_progress)
    return Comparison(directory, table, pd.read_csv(directory / "per_seed.csv"))
