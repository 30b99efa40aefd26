"""Methods (strategies) by the name a scenario's `method.name` selects; one file each. A method is registered with
its settings class: `register` puts both in the one registry (the schema reads its method union, names and
split-method set off the same list), so adding a baseline is its file, its settings class and one `register`."""

from __future__ import annotations

from hsplit_actors.costmodel import ModelArch
from hsplit_actors.methods.base import (
    Assignment,
    FreshAdapters,
    ImportanceCalibration,
    ServerInfo,
    SharedServerSet,
    Strategy,
)
from hsplit_actors.methods.cenlora import CenLoRA
from hsplit_actors.methods.fedit import FedIT
from hsplit_actors.methods.flora import FLoRA
from hsplit_actors.methods.hetlora import HetLoRA
from hsplit_actors.methods.hsplitlora import HSplitLoRA
from hsplit_actors.methods.sfl import SFL
from hsplit_actors.methods.splitlora import SplitLoRA
from hsplit_actors.scenario.schema import method_name, register_method

METHODS: dict[str, type[Strategy]] = {}


def register(strategy: type[Strategy]) -> type[Strategy]:
    """Register a strategy under its settings class's name (adding the settings to the schema if new)."""
    if strategy.settings is None:
        raise TypeError(f"{strategy.__name__} needs `settings`: its method's settings class")
    register_method(strategy.settings)
    strategy.name = method_name(strategy.settings)
    METHODS[strategy.name] = strategy
    return strategy


for _strategy in (HSplitLoRA, SplitLoRA, HetLoRA, FedIT, FLoRA, SFL, CenLoRA):
    register(_strategy)


def make_strategy(spec, arch: ModelArch, batch: int, seq: int, dtype: str, seed: int = 0,
                  server: ServerInfo | None = None) -> Strategy:
    """The strategy object for a scenario's `method` section."""
    return METHODS[spec.name](spec, arch, batch, seq, dtype, seed, server)


__all__ = ["METHODS", "Assignment", "FreshAdapters", "ImportanceCalibration", "ServerInfo", "SharedServerSet",
           "Strategy", "make_strategy", "register"]
