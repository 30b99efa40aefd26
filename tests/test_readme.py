"""The README says what the code does: its table of run outputs matches a real run's files and columns, its
Python example runs, and every path its layout names exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.conftest import ENV_OFFLINE, REPO, tiny_training_scenario

README = (REPO / "README.md").read_text()


def _columns(cell: str) -> list[str]:
    """'a, b (a note, with commas), c' -> ['a', 'b', 'c']: names before any parenthesised note."""
    depth, names, current = 0, [], ""
    for ch in cell:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            names.append(current)
            current = ""
        elif depth == 0 and ch != ")":
            current += ch
    names.append(current)
    return [n.strip().split()[0] for n in names if n.strip()]


def _output_table() -> dict[str, list[str]]:
    section = README[README.index("| table | one row per | columns |"):]
    rows = {}
    for line in section.splitlines()[2:]:
        if not line.startswith("| `"):
            break
        name, _, columns = (c.strip() for c in line.strip("|").split(" | "))
        rows[name.strip("`")] = _columns(columns)
    return rows


def test_the_readme_table_of_outputs_is_what_a_run_writes(tmp_path: Path) -> None:
    from hsplit_actors import run

    done = run(tiny_training_scenario(rounds=1, train={"eval_samples": 32, "lr": 0.01, "local": True}),
               tmp_path / "run")
    documented = _output_table()
    written = {p.stem for p in done.directory.glob("*.parquet")}
    assert set(documented) == written
    for name, columns in documented.items():
        assert columns == list(pd.read_parquet(done.directory / f"{name}.parquet").columns), name
    assert (done.directory / "model" / "adapter" / "adapter_config.json").is_file()


def test_the_readme_python_example_runs(tmp_path: Path) -> None:
    section = README[README.index("### From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "scenarios").symlink_to(REPO / "scenarios")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV_OFFLINE | {"PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[1:] == ["plan", lines[0].split()[2], "True"] and lines[0].startswith("runs/quickstart")
    assert lines[-1] == "error: scenario file 'scenarios/my-typo.yaml' does not exist"


def test_every_path_the_readme_layout_names_exists() -> None:
    layout = README[README.index("## Layout"):]
    paths = re.findall(r"^\| `([^`]+)`", layout, re.M) + re.findall(r"^\| `[^`]+`, `([^`]+)`", layout, re.M)
    assert len(paths) > 10
    for path in paths:
        assert (REPO / path).exists() or (REPO / "hsplit_actors" / path).exists(), path
