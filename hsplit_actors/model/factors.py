"""An adapter as plain tensors, keyed by (block, matrix): what methods aggregate and hosts exchange. Kept apart from
`lora.py` (peft) so that the coordinator, which only aggregates, never imports peft or transformers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

Key = tuple[int, str]  # (block, matrix), blocks 0-based


@dataclass
class LoRAFactors:
    """One adapter: ΔW = (alpha / rank) · B @ A, with A (rank x in) and B (out x rank)."""

    A: torch.Tensor
    B: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self) -> torch.Tensor:
        return self.scale * (self.B @ self.A)
