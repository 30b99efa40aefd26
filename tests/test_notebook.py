"""analysis/timeline.ipynb runs top to bottom on a small run and draws its three plots."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from hsplit_actors.cli import main
from tests.conftest import REPO, small_scenario, tiny_training_scenario


@pytest.mark.parametrize("mode", ["plan", "run"])
def test_timeline_notebook_executes(mode: str, write_scenario, tmp_path: Path, monkeypatch) -> None:
    """On a timing-only run and on a real training run (--local) alike."""
    out = tmp_path / "run"
    raw = small_scenario() if mode == "plan" else tiny_training_scenario(rounds=1)
    extra = ["--local"] if mode == "run" else []
    assert main([mode, str(write_scenario(raw)), "--out", str(out), "--quiet", *extra]) == 0
    notebook = nbformat.read(REPO / "analysis" / "timeline.ipynb", as_version=4)
    monkeypatch.setenv("HSPLIT_RUN_DIR", str(out))
    NotebookClient(notebook, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "analysis")}}).execute()
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 3
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.slow  # kept out of `make test` for its time (10-minute budget); `make test-slow` runs it
def test_compare_notebook_executes(ray_session, write_scenario, tmp_path: Path, monkeypatch) -> None:
    """On a two-method comparison: the table, the metric plot and HSplitLoRA's importance heatmap."""
    from tests.test_run_methods import MIXED

    out = tmp_path / "cmp"
    raw = tiny_training_scenario(**MIXED, rounds=1)
    assert main(["compare", str(write_scenario(raw)), "--methods", "hsplitlora,fedit", "--out", str(out),
                 "--local", "--quiet"]) == 0
    notebook = nbformat.read(REPO / "analysis" / "compare.ipynb", as_version=4)
    monkeypatch.setenv("HSPLIT_COMPARE_DIR", str(out))
    NotebookClient(notebook, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "analysis")}}).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2
