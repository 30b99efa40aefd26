"""Centralised LoRA: all data on the server, which trains the whole model; the upper reference, no aggregation."""

from __future__ import annotations

import numpy as np

from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.base import Assignment, Strategy, single_config


class CenLoRA(Strategy):
    name = "cenlora"

    def configure(self, round_: int, fleet: Fleet) -> Assignment:
        return single_config(self.uniform(0), np.ones(len(fleet), dtype=bool))

    def aggregation_payload(self, assignment: Assignment, participants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        zero = np.zeros(len(participants), dtype=np.int64)
        return zero, zero.copy()
