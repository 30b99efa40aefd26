"""Refactorings change no result: every shipped scenario's `plan` tables are bit for bit the recorded ones (the
runs in each aggregation mode are checked by test_recipe's fingerprint law). A change *meant* to alter timing
re-records with `python -m tests.fingerprints` and says so in its commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fingerprints import PLANS, measure_plan, recorded

SLOW = {"fleet_10k", "paper_fleet_1000"}  # 10k and 1,000 x 100 rounds: seconds to a minute each; make test-slow


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in PLANS])
def test_a_shipped_scenarios_plan_is_bit_for_bit_the_recorded_one(name: str, tmp_path: Path) -> None:
    assert measure_plan(name, tmp_path / name) == recorded()[f"plan:{name}"]


def test_every_shipped_scenario_has_a_recorded_plan() -> None:
    assert {f"plan:{n}" for n in PLANS} <= set(recorded())
