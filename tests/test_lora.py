"""Heterogeneous LoRA: each matrix gets exactly its rank and alpha, adapters round-trip as plain tensors, and a
merged update changes the base exactly as ΔW says."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hsplit_actors.model import (
    LoRAFactors,
    SplitModel,
    apply_lora,
    export_adapters,
    import_adapters,
    merge_delta,
    trainable_parameters,
)
from hsplit_actors.model.lora import adapted_keys, base_weight
from tests.test_split import batch, hetero_ranks, randomise_b, small_model


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_every_matrix_gets_its_own_rank_and_alpha_and_rank_zero_means_none(family: str) -> None:
    model = small_model(family)
    ranks = hetero_ranks(model, seed=3)
    alphas = {key: 3.0 * (i + 1) for i, key in enumerate(k for k, r in ranks.items() if r)}
    apply_lora(model, ranks, alphas)
    adapters = export_adapters(model)
    assert set(adapters) == {k for k, r in ranks.items() if r > 0}
    for key, factors in adapters.items():
        assert factors.rank == ranks[key]
        assert factors.alpha == alphas[key]
    assert set(adapted_keys(model)) == set(adapters)


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_only_adapters_and_a_classifier_train(family: str) -> None:
    model = small_model(family)
    apply_lora(model, {(0, "query"): 4, (1, "ffn_out"): 2})
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".lora_" in n or n.startswith("classifier.") for n in names)
    assert any(n.startswith("classifier.") for n in names) == (family == "bert")
    out, n_in = base_weight(model, (1, "ffn_out")).shape
    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    assert lora == 4 * (64 + 64) + 2 * (n_in + out)  # r x (in + out) per adapter
    assert len(trainable_parameters(model)) == len(names)


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_export_import_round_trip_restores_the_function(family: str) -> None:
    model = small_model(family)
    ranks = hetero_ranks(model, seed=4)
    apply_lora(model, ranks, seed=1)
    randomise_b(model)
    model.eval()
    ids, mask, _ = batch(family)
    before = SplitModel(model, 2).logits(ids, mask).detach()
    saved = export_adapters(model)
    apply_lora(model, ranks, seed=99)  # fresh adapters: B = 0, a different function
    assert (SplitModel(model, 2).logits(ids, mask) - before).abs().max() > 1e-4
    import_adapters(model, saved)
    assert (SplitModel(model, 2).logits(ids, mask) - before).abs().max() < 1e-6


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_merging_the_adapters_delta_then_restarting_keeps_the_function(family: str) -> None:
    """SPEC §4's round end: ΔW merged into the base, adapters restarted (B = 0) — the model is unchanged."""
    model = small_model(family)
    ranks = hetero_ranks(model, seed=5)
    apply_lora(model, ranks)
    randomise_b(model)
    model.eval()
    ids, mask, _ = batch(family)
    before = SplitModel(model, 3).logits(ids, mask).detach()
    for key, factors in export_adapters(model).items():
        merge_delta(model, key, (factors.scale * factors.B, factors.A))
    new_ranks = {key: (r + 2) % 6 for key, r in ranks.items()}  # restart at other ranks
    apply_lora(model, new_ranks, seed=7)
    assert {k: f.rank for k, f in export_adapters(model).items()} == {k: r for k, r in new_ranks.items() if r}
    assert (SplitModel(model, 3).logits(ids, mask) - before).abs().max() < 1e-5


@settings(max_examples=20, deadline=None)
@given(rank=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_low_rank_and_dense_merges_agree(rank: int, seed: int) -> None:
    model = small_model("llama")
    key = (1, "ffn_gate")
    gen = torch.Generator().manual_seed(seed)
    B, A = torch.randn(160, rank, generator=gen), torch.randn(rank, 64, generator=gen)
    start = base_weight(model, key).detach().clone()
    merge_delta(model, key, (B, A))
    assert torch.allclose(base_weight(model, key), start + B @ A, atol=1e-5)
    merge_delta(model, key, -(B @ A))
    assert torch.allclose(base_weight(model, key), start, atol=1e-5)


def test_factors_delta_is_scale_times_b_a() -> None:
    A, B = torch.randn(4, 10), torch.randn(6, 4)
    f = LoRAFactors(A, B, alpha=8.0)
    assert f.rank == 4 and f.scale == 2.0
    assert torch.allclose(f.delta(), 2.0 * B @ A)


@pytest.mark.parametrize("bad, message", [
    ({(0, "ffn_gate"): 4}, "matrix 'ffn_gate' does not exist in a gpt2 block"),
    ({(7, "query"): 4}, "block 7 does not exist"),
    ({(0, "query"): -1}, "ranks must be >= 0"),
])
def test_bad_rank_patterns_are_rejected(bad: dict, message: str) -> None:
    model = small_model("gpt2")
    with pytest.raises(ValueError, match=message):
        apply_lora(model, bad)
