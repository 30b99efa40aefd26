"""Many virtual clients on one model: the model's LoRA modules are injected once for every (block, matrix) any
client adapts, and each client's own parameters are swapped in before its computation (pointer assignment, no
copies). A client that does not adapt a matrix gets empty factors and scale 0 there, so heterogeneous ranks and
split points share one model and one copy of the frozen base.

Autograd keeps the tensors a forward pass used, so a client's pending backward is unaffected by later swaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hsplit_actors.model.families import family_of
from hsplit_actors.model.lora import ADAPTER, Key, LoRAFactors, apply_lora, module_name


@dataclass
class Adapter:
    """One client's trainable factors for one matrix."""

    A: nn.Parameter  # rank x in
    B: nn.Parameter  # out x rank
    alpha: float

    @property
    def scale(self) -> float:
        return self.alpha / self.A.shape[0]

    def factors(self) -> LoRAFactors:
        return LoRAFactors(self.A.detach().clone(), self.B.detach().clone(), self.alpha)

    def assign(self, factors: LoRAFactors) -> None:
        with torch.no_grad():
            self.A.copy_(factors.A)
            self.B.copy_(factors.B)


def head_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable head's parameters, named `<module index>.<parameter>` (how adapter states key them)."""
    modules = family_of(model).trainable_head(model)
    return {f"{i}.{name}": p for i, m in enumerate(modules) for name, p in m.named_parameters()}


class Slots:
    """The swappable LoRA modules (and trainable head parameters) of one model."""

    def __init__(self, model: nn.Module, keys: list[Key]):
        self.model = model
        apply_lora(model, {key: 1 for key in keys})
        self.modules = {key: model.get_submodule(module_name(model, key)) for key in keys}
        self.shapes = {key: tuple(m.get_base_layer().weight.shape) for key, m in self.modules.items()}
        device = {key: m.get_base_layer().weight.device for key, m in self.modules.items()}
        self.empty = {key: (nn.Parameter(torch.zeros(0, s[1], device=device[key]), requires_grad=False),
                            nn.Parameter(torch.zeros(s[0], 0, device=device[key]), requires_grad=False))
                      for key, s in self.shapes.items()}
        self.head_modules = family_of(model).trainable_head(model)

    def load(self, adapters: dict[Key, Adapter], head: dict[str, nn.Parameter] | None = None) -> None:
        """Make `adapters` (and `head`) the ones the model computes with; other slots become no-ops."""
        for key, module in self.modules.items():
            adapter = adapters.get(key)
            if adapter is None:
                A, B, scale = *self.empty[key], 0.0
            else:
                A, B, scale = adapter.A, adapter.B, adapter.scale
            module.lora_A[ADAPTER].weight = A
            module.lora_B[ADAPTER].weight = B
            module.scaling[ADAPTER] = scale
        if head:
            for i, m in enumerate(self.head_modules):
                for name, _ in list(m.named_parameters()):
                    setattr(m, name, head[f"{i}.{name}"])
