"""IWI's measurement: `s_m = mean(|W * G|)` with `G = dL/dW = sum over tokens of delta^T x`, gathered by hooks on
the LoRA slot modules during an ordinary iteration. The base weights stay frozen: the hook sees the module's
input `x` on the way forward and the gradient `delta` of its output on the way back, and multiplies them itself.

A matrix's output carries a gradient only if something before it is trainable; during a calibration iteration
the embedding output is marked as needing a gradient so that the first block's matrices are scored too (an
input gradient through the part's first matrices, nothing else changes: same loss, same adapter gradients).
"""

from __future__ import annotations

import torch
from torch import nn

from hsplit_actors.model.factors import Key


class ImportanceProbe:
    """While entered, each forward through a slot of `blocks` registers a gradient hook that adds
    `mean(|W * G|)` of that matrix to each part's `sink[key]` (a list; the host averages it)."""

    def __init__(self, modules: dict[Key, nn.Module], blocks: range,
                 parts: list[tuple[slice, dict[Key, list[float]]]], embeddings: list[nn.Module] | None = None):
        """`parts`: each client's rows of the batch (a slice; `slice(None)` for a job alone) and its sink. A
        batched job is scored on its own rows only, so batching leaves the scores as they were."""
        self.modules = {key: m for key, m in modules.items() if key[0] in blocks}
        self.parts = parts
        self.embeddings = embeddings or []
        self.handles: list = []

    def __enter__(self) -> ImportanceProbe:
        for key, module in self.modules.items():
            self.handles.append(module.register_forward_hook(self._on_forward(key, module)))
        for module in self.embeddings:
            self.handles.append(module.register_forward_hook(_needs_grad))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _on_forward(self, key: Key, module: nn.Module):
        weight = module.get_base_layer().weight

        def hook(_module, inputs, output):
            if not output.requires_grad:
                return
            x = inputs[0].detach()

            def on_grad(delta: torch.Tensor) -> None:
                with torch.no_grad():
                    for rows, sink in self.parts:
                        d, inp = delta[rows], x[rows]
                        g = d.reshape(-1, d.shape[-1]).T.to(inp.dtype) @ inp.reshape(-1, inp.shape[-1])
                        sink.setdefault(key, []).append(float((weight.detach() * g).abs().mean()))

            output.register_hook(on_grad)

        return hook


def _needs_grad(_module, _inputs, output):
    if isinstance(output, torch.Tensor) and not output.requires_grad and torch.is_grad_enabled():
        return output.detach().requires_grad_(True)
    return None
