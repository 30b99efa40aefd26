"""Models for real training: loading, cutting at a split point, heterogeneous LoRA on every matrix."""

from hsplit_actors.model.lora import (
    LoRAFactors,
    apply_lora,
    export_adapters,
    import_adapters,
    merge_delta,
    remove_lora,
    trainable_parameters,
)
from hsplit_actors.model.split import SplitModel

__all__ = ["LoRAFactors", "SplitModel", "apply_lora", "export_adapters", "import_adapters", "merge_delta",
           "remove_lora", "trainable_parameters"]
