"""The public Python API: the CLI's commands as functions, same checks, same one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, small_scenario


def test_the_package_exports_its_commands_as_functions() -> None:
    import hsplit_actors.comparison  # noqa: F401  (submodules never shadow the functions)
    import hsplit_actors.exporting  # noqa: F401
    import hsplit_actors.planning  # noqa: F401
    from hsplit_actors import compare, export, plan, read_run, run, validate

    assert set(hsplit_actors.__all__) == set(hsplit_actors._PUBLIC) <= set(dir(hsplit_actors))
    assert {"plan", "run", "compare", "validate", "read_run", "ScenarioError"} <= set(hsplit_actors.__all__)
    assert all(callable(f) and not isinstance(f, type(sys)) for f in (plan, run, compare, validate, read_run, export))


def test_plan_takes_a_path_a_scenario_or_a_dict_and_returns_the_directory_and_its_tables(tmp_path: Path) -> None:
    from hsplit_actors import Scenario, plan, read_run, validate

    raw = small_scenario(output_dir=str(tmp_path / "runs"))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    scenario = validate(path)
    assert isinstance(scenario, Scenario) and scenario.name == raw["name"]
    seen = []
    runs = [plan(path, tmp_path / "a", on_progress=seen.append), plan(scenario, tmp_path / "b"),
            plan(raw, tmp_path / "c")]
    assert seen and seen[-1].completed == seen[-1].rounds
    for done in runs:
        again = read_run(done.directory)
        assert done.meta["status"] == "complete" and done.meta["mode"] == "plan"
        pd.testing.assert_frame_equal(done.rounds, again.rounds)
        pd.testing.assert_frame_equal(done.events.drop(columns="run"), runs[0].events.drop(columns="run"))


@pytest.mark.parametrize("case", ["bad field", "existing out", "missing file"])
def test_errors_are_one_exception_with_the_line_the_cli_prints(case: str, tmp_path: Path) -> None:
    from hsplit_actors import ScenarioError, plan

    raw = small_scenario(rounds=0) if case == "bad field" else small_scenario()
    path = tmp_path / "s.yaml"
    if case != "missing file":
        path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    if case == "existing out":
        out.mkdir()
    with pytest.raises(ScenarioError) as caught:
        plan(path, out)
    cli = subprocess.run([sys.executable, "-m", "hsplit_actors.cli", "plan", str(path), "--out", str(out),
                          "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2
    assert cli.stderr.strip().splitlines()[-1] == f"error: {caught.value}"
