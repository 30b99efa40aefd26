"""A split model computes exactly what the whole model computes: logits, loss and every adapter's gradient."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from hsplit_actors.costmodel.presets import build_config
from hsplit_actors.model import SplitModel, apply_lora
from hsplit_actors.model.families import family_of

SMALL = {
    "gpt2": ("gpt2-small", dict(n_embd=64, n_layer=4, n_head=4, vocab_size=300, n_positions=64)),
    "llama": ("llama2-7b", dict(hidden_size=64, intermediate_size=160, num_hidden_layers=4, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=300, max_position_embeddings=64)),
    "bert": ("minilm-l6", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                               vocab_size=300, max_position_embeddings=64)),
}


def small_model(family: str, **overrides):
    preset, fields = SMALL[family]
    config = build_config(preset, {**fields, **overrides})
    torch.manual_seed(0)
    cls = AutoModelForSequenceClassification if family == "bert" else AutoModelForCausalLM
    return cls.from_config(config)


def hetero_ranks(model, seed: int = 0) -> dict:
    """A different rank (including 0) on every matrix of every block."""
    family = family_of(model)
    gen = torch.Generator().manual_seed(seed)
    choices = [0, 2, 4, 8]
    return {(b, m): choices[int(torch.randint(0, 4, (1,), generator=gen))]
            for b in range(len(family.blocks(model))) for m in family.matrix_paths}


def randomise_b(model) -> None:
    """peft starts B at 0 (adapter = no-op); give B values so the adapters actually matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)


def batch(family: str, b: int = 3, s: int = 12):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 300, (b, s), generator=gen)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, -4:] = 0  # right padding on one row
    mask[1, -1:] = 0
    labels = torch.tensor([0, 1, 1]) if family == "bert" else ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def whole_forward(model, ids, mask, labels):
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    return out.logits, out.loss


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_split_forward_and_gradients_equal_the_whole_model(family: str, k: int) -> None:
    model = small_model(family)
    apply_lora(model, hetero_ranks(model, seed=k), seed=k)
    randomise_b(model)
    model.eval()  # dropout off: both sides must see the same computation
    ids, mask, labels = batch(family)

    logits, loss = whole_forward(model, ids, mask, labels)
    loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)

    split = SplitModel(model, k)
    split_logits = split.logits(ids, mask)
    assert (split_logits - logits).abs().max() < 1e-5
    split_loss = split.step(ids, mask, labels)
    assert split_loss == pytest.approx(loss.item(), abs=1e-5)
    assert expected, "there must be trainable adapters"
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name
            assert (param.grad - expected[name]).abs().max() < 1e-5, name


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_parts_own_exactly_their_side(family: str) -> None:
    model = small_model(family)
    apply_lora(model, {(b, "query"): 4 for b in range(4)})
    split = SplitModel(model, 2)
    client = {id(p): p for p in split.client.parameters()}
    server = {id(p): p for p in split.server.parameters()}
    shared = client.keys() & server.keys()
    # Only tied, frozen weights may sit on both sides (GPT-2's LM head is its token embedding matrix).
    assert all(not client[i].requires_grad for i in shared)
    assert len(shared) == (1 if family == "gpt2" else 0)
    assert client.keys() | server.keys() == {id(p) for p in model.parameters()}
    client_lora = [n for n, _ in split.client.named_parameters() if "lora_A" in n]
    server_lora = [n for n, _ in split.server.named_parameters() if "lora_A" in n]
    assert len(client_lora) == len(server_lora) == 2


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_federated_split_is_the_whole_model_and_bad_split_points_are_rejected(family: str) -> None:
    model = small_model(family)
    apply_lora(model, {(0, "value"): 2})
    model.eval()
    ids, mask, labels = batch(family)
    split = SplitModel(model, 4)
    assert split.server is None
    assert (split.logits(ids, mask) - whole_forward(model, ids, mask, labels)[0]).abs().max() < 1e-5
    for bad in (0, 5, -1):
        with pytest.raises(ValueError, match="split point .* out of range.*4 blocks"):
            SplitModel(model, bad)


@pytest.mark.parametrize("kind", ["qwen2", "mistral"])
def test_llama_family_relatives_split_exactly(kind: str) -> None:
    from transformers import MistralConfig, Qwen2Config

    cls = {"qwen2": Qwen2Config, "mistral": MistralConfig}[kind]
    config = cls(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=300, max_position_embeddings=64)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    apply_lora(model, hetero_ranks(model))
    randomise_b(model)
    model.eval()
    ids, mask, labels = batch("llama")
    logits, _ = whole_forward(model, ids, mask, labels)
    assert (SplitModel(model, 2).logits(ids, mask) - logits).abs().max() < 1e-5
