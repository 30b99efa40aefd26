"""Models come from a local directory, the MiniLM package, or a preset config; bad directories are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsplit_actors.errors import ScenarioError
from hsplit_actors.model.loading import load_model, minilm_dir
from tests.test_split import small_model


def test_minilm_loads_its_real_weights_offline() -> None:
    import torch
    from safetensors.torch import load_file

    model = load_model(task="classification", preset="minilm-l6")
    saved = load_file(str(minilm_dir() / "model.safetensors"))
    key = next(k for k in saved if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert torch.equal(model.bert.encoder.layer[0].attention.self.query.weight, saved[key])
    assert model.config.num_labels == 2


def test_saved_directory_round_trips(tmp_path: Path) -> None:
    import torch

    model = small_model("llama")
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(task="causal_lm", path=str(tmp_path / "m"))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_directory_without_weights_or_config_is_a_clear_error(tmp_path: Path) -> None:
    model = small_model("gpt2")
    model.config.save_pretrained(tmp_path / "config-only")
    with pytest.raises(ScenarioError, match="has a config but no weights"):
        load_model(task="causal_lm", path=str(tmp_path / "config-only"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScenarioError, match="has no config.json"):
        load_model(task="causal_lm", path=str(tmp_path / "empty"))


def test_presets_build_seeded_random_models_and_refuse_missing_weights() -> None:
    import torch

    a = load_model(task="causal_lm", preset="gpt2-small", overrides={"n_layer": 2, "n_embd": 64, "n_head": 2}, seed=3)
    b = load_model(task="causal_lm", preset="gpt2-small", overrides={"n_layer": 2, "n_embd": 64, "n_head": 2}, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    with pytest.raises(ScenarioError, match="no pretrained weights for 'llama2-7b'"):
        load_model(task="causal_lm", preset="llama2-7b", weights="pretrained")
