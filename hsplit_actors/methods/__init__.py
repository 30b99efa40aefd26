"""Methods (strategies) by the name a scenario's `method.name` selects; one file each."""

from __future__ import annotations

from hsplit_actors.costmodel import ModelArch
from hsplit_actors.methods.base import Assignment, ServerInfo, Strategy
from hsplit_actors.methods.cenlora import CenLoRA
from hsplit_actors.methods.fedit import FedIT
from hsplit_actors.methods.flora import FLoRA
from hsplit_actors.methods.hetlora import HetLoRA
from hsplit_actors.methods.hsplitlora import HSplitLoRA
from hsplit_actors.methods.sfl import SFL
from hsplit_actors.methods.splitlora import SplitLoRA

METHODS: dict[str, type[Strategy]] = {m.name: m for m in (HSplitLoRA, SplitLoRA, HetLoRA, FedIT, FLoRA, SFL, CenLoRA)}


def make_strategy(spec, arch: ModelArch, batch: int, seq: int, dtype: str, seed: int = 0,
                  server: ServerInfo | None = None) -> Strategy:
    """The strategy object for a scenario's `method` section."""
    return METHODS[spec.name](spec, arch, batch, seq, dtype, seed, server)


__all__ = ["METHODS", "Assignment", "ServerInfo", "Strategy", "make_strategy"]
