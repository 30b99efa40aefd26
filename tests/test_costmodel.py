"""The cost model agrees with what torch actually executes (FlopCounterMode) and with what autograd saves."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hsplit_actors.costmodel import ClientConfig, ModelArch, iteration_cost
from hsplit_actors.costmodel.costs import _block_pass
from hsplit_actors.costmodel.presets import PRESETS, build_config, preset_fields
from hsplit_actors.model import apply_lora

BATCH, SEQ = 2, 24

SMALL = {
    "gpt2": ("gpt2-small", dict(n_embd=64, n_layer=3, n_head=4, vocab_size=500, n_positions=64)),
    "llama": ("llama2-7b", dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=500, max_position_embeddings=64)),
    "bert": ("minilm-l6", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                               vocab_size=500, max_position_embeddings=64)),
}


def _model(family: str, pattern: dict[tuple[int, str], int]):
    """A small model of `family` with the project's own heterogeneous LoRA (GPT-2's q/k/v as separate maps, as
    the cost model assumes); only adapters and a classifier train."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    preset, overrides = SMALL[family]
    config = build_config(preset, overrides)
    torch.manual_seed(0)
    cls = AutoModelForSequenceClassification if family == "bert" else AutoModelForCausalLM
    # eager attention: FlopCounterMode has no formula for CPU's fused SDPA kernels and would count them as 0
    model = cls.from_config(config, attn_implementation="eager")
    apply_lora(model, pattern)
    return model, ModelArch.from_hf_config(config)


def _inputs(family: str) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 500, (BATCH, SEQ))
    return {"input_ids": ids, "labels": torch.tensor([0, 1]) if family == "bert" else ids}


def _measure(model, family: str) -> tuple[int, int]:
    with FlopCounterMode(display=False) as fwd_counter:
        loss = model(**_inputs(family)).loss
    with FlopCounterMode(display=False) as bwd_counter:
        loss.backward()
    return fwd_counter.get_total_flops(), bwd_counter.get_total_flops()


PATTERNS = {
    "qv-all": lambda a: {(b, m): 4 for b in range(a.n_layers) for m in ("query", "value")},
    "mixed": lambda a: {(b, m): r for b, (m, r) in enumerate(
        [("attn_out", 8), ("ffn_in", 2), ("ffn_out", 16)][: a.n_layers])},
    "late-only": lambda a: {(a.n_layers - 1, "ffn_out"): 4},
    "everything": lambda a: {(b, m): 2 + 2 * b for b in range(a.n_layers) for m in a.matrices},
}


def _patterned(family: str, pattern: str):
    """A model in training mode with one of PATTERNS' rank patterns: (model, arch, ranks)."""
    ranks = PATTERNS[pattern](ModelArch.from_hf_config(build_config(*SMALL[family])))
    model, arch = _model(family, ranks)
    return model.train(), arch, ranks


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_whole_model_flops_match_flop_counter(family: str, pattern: str) -> None:
    model, arch, ranks = _patterned(family, pattern)
    fwd, bwd = _measure(model, family)
    cost = iteration_cost(arch, ClientConfig.from_pattern(arch, arch.n_layers, ranks), BATCH, SEQ)
    assert cost.client_fwd_flops == pytest.approx(fwd, rel=0.01)  # SPEC asks 10%; it is exact today
    assert cost.client_bwd_flops == pytest.approx(bwd, rel=0.01)


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_block_with_input_gradient_matches_flop_counter(family: str) -> None:
    """A server-side block: its input needs a gradient (dL/dh goes back to the client)."""
    arch = ModelArch.from_hf_config(build_config(*SMALL[family]))
    ranks = {(0, m): 4 for m in arch.matrices}
    model, arch = _model(family, ranks)
    x = torch.randn(BATCH, SEQ, arch.hidden, requires_grad=True)
    if family == "gpt2":
        call = lambda: model.transformer.h[0](x)  # noqa: E731
    elif family == "bert":
        call = lambda: model.bert.encoder.layer[0](x)  # noqa: E731
    else:
        rope = model.model.rotary_emb(x, torch.arange(SEQ).unsqueeze(0))
        call = lambda: model.model.layers[0](x, position_embeddings=rope)  # noqa: E731
    with FlopCounterMode(display=False) as f:
        out = call()
        out = out[0] if isinstance(out, tuple) else out
    with FlopCounterMode(display=False) as b:
        out.sum().backward()
    row = ClientConfig.from_pattern(arch, 0, ranks).ranks[0]
    p = _block_pass(arch, row, BATCH, SEQ, x_rg=True, dropout=False)
    assert p.fwd == pytest.approx(f.get_total_flops(), rel=0.01)
    assert p.bwd == pytest.approx(b.get_total_flops(), rel=0.01)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_have_their_published_sizes(preset: str) -> None:
    expected = {"gpt2-small": 124e6, "gpt2-medium": 355e6, "gpt2-large": 774e6, "llama2-7b": 6.74e9,
                "minilm-l6": 22.7e6}[preset]
    arch = ModelArch.from_hf_config(build_config(preset))
    assert arch.total_params == pytest.approx(expected, rel=0.02)


# each a usable model of every family (960: a multiple of every preset's head count, LLaMA's head_dim even)
OVERRIDES = [{}, {"num_hidden_layers": 2}, {"n_layer": 3, "n_inner": 256}, {"hidden_size": 960, "num_labels": 3},
             {"num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 64},
             {"num_key_value_heads": 4, "head_dim": 64}, {"intermediate_size": 100, "tie_word_embeddings": True}]


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("overrides", OVERRIDES, ids=lambda o: ",".join(o) or "none")
def test_validation_reads_the_architecture_transformers_builds(preset: str, overrides: dict) -> None:
    """Scenario validation reads presets without transformers; it must see exactly the model hosts build."""
    assert ModelArch.from_hf_config(preset_fields(preset, overrides)) == \
        ModelArch.from_hf_config(build_config(preset, overrides))


def _saved_activation_bytes(model, family: str) -> int:
    """Bytes autograd keeps for backward (each storage once, parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**_inputs(family)).loss.backward()
    return sum(seen.values())


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_activation_memory_estimate_is_close_to_what_autograd_saves(family: str, pattern: str) -> None:
    """The memory model's activation term (SPEC §2) against the tensors autograd really keeps."""
    model, arch, ranks = _patterned(family, pattern)
    measured = _saved_activation_bytes(model, family)
    cost = iteration_cost(arch, ClientConfig.from_pattern(arch, arch.n_layers, ranks), BATCH, SEQ)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    estimated_activations = cost.client_memory_bytes - frozen * 4 - trainable * 16
    assert estimated_activations == pytest.approx(measured, rel=0.10)


def test_memory_grows_with_split_point_and_rank() -> None:
    arch = ModelArch.from_hf_config(build_config("llama2-7b"))
    mem = [iteration_cost(arch, ClientConfig.uniform(arch, k, 8, ["query", "value"]), 4, 256, "bfloat16")
           .client_memory_bytes for k in (1, 4, 16, 32)]
    assert mem == sorted(mem) and mem[-1] > 13e9  # the whole 7B model in bf16 is ~13.5 GB of weights alone
    small, big = (iteration_cost(arch, ClientConfig.uniform(arch, 4, r, ["query", "value"]), 4, 256, "bfloat16")
                  .client_memory_bytes for r in (2, 16))
    assert big > small


@pytest.mark.parametrize("family, name", [("gpt2", "GPT2Config"), ("bert", "BertConfig"), ("llama", "LlamaConfig")])
def test_the_override_keys_a_scenario_accepts_are_the_config_class_keys(family: str, name: str) -> None:
    """Validation refuses an override key its family's config would ignore; the list it uses (kept without
    importing transformers) must be the installed config class's own parameters and aliases."""
    import inspect

    import transformers

    from hsplit_actors.costmodel.presets import CONFIG_KEYS

    config = getattr(transformers, name)
    expected = (set(inspect.signature(config.__init__).parameters) - {"self", "kwargs"}) | set(config.attribute_map)
    assert CONFIG_KEYS[family] == (expected - {"transformers_version"}) | {"num_labels"}  # a version is no override
