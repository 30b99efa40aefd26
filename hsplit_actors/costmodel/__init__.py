"""Cost model: FLOPs, bytes and memory of a split-LoRA configuration, from the model config alone."""

from hsplit_actors.costmodel.arch import ModelArch
from hsplit_actors.costmodel.config import ClientConfig
from hsplit_actors.costmodel.costs import IterationCost, iteration_cost

__all__ = ["ClientConfig", "IterationCost", "ModelArch", "iteration_cost"]
