"""Scenario files: the pydantic schema, YAML loading with line numbers, one-line errors."""

from hsplit_actors.scenario.load import dump_scenario, load_scenario, parse_scenario
from hsplit_actors.scenario.schema import Scenario

__all__ = ["Scenario", "dump_scenario", "load_scenario", "parse_scenario"]
