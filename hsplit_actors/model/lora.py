"""Heterogeneous LoRA on a (split) model: a rank and alpha per (block, matrix), rank 0 meaning no adapter.

Built on peft (`inject_adapter_in_model` with `rank_pattern` / `alpha_pattern`). What peft does not offer is
written here: removing adapters to restart them at new ranks, exporting / importing the factors as plain tensors
keyed by (block, matrix), and merging an arbitrary dense or low-rank update into the frozen base in place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from hsplit_actors.model.factors import Key, LoRAFactors
from hsplit_actors.model.families import family_of

ADAPTER = "default"


def module_name(model: nn.Module, key: Key) -> str:
    family = family_of(model)
    block, matrix = key
    if matrix not in family.matrix_paths:
        raise ValueError(f"matrix {matrix!r} does not exist in a {family.name} block; "
                         f"use one of {list(family.matrix_paths)}")
    layers = len(family.blocks(model))
    if not 0 <= block < layers:
        raise ValueError(f"block {block} does not exist: the model has blocks 0..{layers - 1}")
    return f"{family.block_path}.{block}.{family.matrix_paths[matrix]}"


def remove_lora(model: nn.Module) -> None:
    """Put every adapted module's base layer back (adapters discarded, base untouched)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def apply_lora(model: nn.Module, ranks: Mapping[Key, int], alphas: Mapping[Key, float] | None = None,
               seed: int = 0, dropout: float = 0.0) -> None:
    """(Re)start adapters at `ranks` (A random, B = 0), replacing any existing ones; freeze everything else
    except a classification head. `alphas` default to 2 x rank."""
    family = family_of(model)
    family.prepare(model)
    remove_lora(model)
    alphas = dict(alphas or {})
    names = {key: module_name(model, key) for key in ranks}
    for key in alphas:
        module_name(model, key)
    active = {key: r for key, r in ranks.items() if r > 0}
    if any(r < 0 for r in ranks.values()):
        raise ValueError("LoRA ranks must be >= 0")
    if active:
        config = LoraConfig(
            r=8, lora_alpha=16, lora_dropout=dropout, bias="none",
            target_modules=[names[key] for key in active],
            rank_pattern={re.escape(names[key]): r for key, r in active.items()},
            alpha_pattern={re.escape(names[key]): float(alphas.get(key, 2 * r)) for key, r in active.items()},
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name)
    for module in family.trainable_head(model):
        module.requires_grad_(True)


def _lora_module(model: nn.Module, key: Key) -> LoraLayer | None:
    module = model.get_submodule(module_name(model, key))
    return module if isinstance(module, LoraLayer) and ADAPTER in module.lora_A else None


def adapted_keys(model: nn.Module) -> list[Key]:
    family = family_of(model)
    return [(b, m) for b in range(len(family.blocks(model))) for m in family.matrix_paths
            if _lora_module(model, (b, m)) is not None]


def export_adapters(model: nn.Module, blocks: range | None = None) -> dict[Key, LoRAFactors]:
    """Every adapter (optionally only those of `blocks`) as detached plain tensors."""
    out = {}
    for key in adapted_keys(model):
        if blocks is not None and key[0] not in blocks:
            continue
        module = _lora_module(model, key)
        out[key] = LoRAFactors(module.lora_A[ADAPTER].weight.detach().clone(),
                               module.lora_B[ADAPTER].weight.detach().clone(), float(module.lora_alpha[ADAPTER]))
    return out


def import_adapters(model: nn.Module, adapters: Mapping[Key, LoRAFactors]) -> None:
    """Load factors into existing adapters of the same ranks."""
    with torch.no_grad():
        for key, factors in adapters.items():
            module = _lora_module(model, key)
            if module is None:
                raise ValueError(f"no adapter at block {key[0]} {key[1]} to import into")
            A, B = module.lora_A[ADAPTER].weight, module.lora_B[ADAPTER].weight
            if A.shape != factors.A.shape or B.shape != factors.B.shape:
                raise ValueError(f"adapter at block {key[0]} {key[1]} has rank {A.shape[0]}, "
                                 f"the imported one rank {factors.rank}")
            A.copy_(factors.A)
            B.copy_(factors.B)
            module.lora_alpha[ADAPTER] = factors.alpha
            module.scaling[ADAPTER] = factors.scale


def base_weight(model: nn.Module, key: Key) -> torch.Tensor:
    """The frozen base weight (out x in) of one matrix."""
    module = model.get_submodule(module_name(model, key))
    base = module.get_base_layer() if isinstance(module, LoraLayer) else module
    return base.weight


def merge_delta(model: nn.Module, key: Key, delta: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> None:
    """Add ΔW to the frozen base in place: a dense (out x in) matrix, or low-rank factors (B, A) with ΔW = B @ A."""
    weight = base_weight(model, key)
    with torch.no_grad():
        if isinstance(delta, tuple):
            B, A = delta
            weight.addmm_(B.to(weight.dtype), A.to(weight.dtype))
        else:
            weight.add_(delta.to(weight.dtype))


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]
