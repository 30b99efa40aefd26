"""Methods (strategies) by the name a scenario's `method.name` selects; one file each."""

from __future__ import annotations

from hsplit_actors.costmodel import ModelArch
from hsplit_actors.methods.base import Assignment, Strategy
from hsplit_actors.methods.cenlora import CenLoRA
from hsplit_actors.methods.fedit import FedIT
from hsplit_actors.methods.flora import FLoRA
from hsplit_actors.methods.hetlora import HetLoRA
from hsplit_actors.methods.sfl import SFL
from hsplit_actors.methods.splitlora import SplitLoRA

METHODS: dict[str, type[Strategy]] = {m.name: m for m in (SFL, SplitLoRA, FedIT, FLoRA, HetLoRA, CenLoRA)}


def make_strategy(spec, arch: ModelArch, batch: int, seq: int, dtype: str) -> Strategy:
    """The strategy object for a scenario's `method` section."""
    return METHODS[spec.name](spec, arch, batch, seq, dtype)


__all__ = ["METHODS", "Assignment", "Strategy", "make_strategy"]
