"""hsplit-actors: HSplitLoRA (heterogeneous split LoRA fine-tuning) as a virtual-clock, actor-based simulation."""

__version__ = "0.1.0"
