"""Models for real training: loading, cutting at a split point, heterogeneous LoRA on every matrix.

Names are imported on first use: `hsplit_actors.model.factors` (plain tensors) must not pull in peft and
transformers, which the coordinator of a Ray run never needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what editors and type checkers see; at run time, __getattr__ below
    from hsplit_actors.model.factors import LoRAFactors
    from hsplit_actors.model.lora import (
        apply_lora,
        export_adapters,
        import_adapters,
        merge_delta,
        remove_lora,
        trainable_parameters,
    )
    from hsplit_actors.model.split import SplitModel

_WHERE = {"LoRAFactors": "factors", "SplitModel": "split", "apply_lora": "lora", "export_adapters": "lora",
          "import_adapters": "lora", "merge_delta": "lora", "remove_lora": "lora", "trainable_parameters": "lora"}
__all__ = ["LoRAFactors", "SplitModel", "apply_lora", "export_adapters", "import_adapters", "merge_delta",
           "remove_lora", "trainable_parameters"]  # the keys of _WHERE


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
