"""Evaluation through the split parts gives the whole model's numbers; generation matches Hugging Face's."""

from __future__ import annotations

import math

import pytest
import torch

from hsplit_actors.data.datasets import Encoded
from hsplit_actors.metrics import evaluate, generate, text_scores
from hsplit_actors.model import SplitModel, apply_lora
from tests.test_split import randomise_b, small_model


def test_lm_loss_and_perplexity_match_the_whole_model() -> None:
    model = small_model("gpt2")
    apply_lora(model, {(1, "query"): 4})
    randomise_b(model)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 300, (6, 16), generator=gen)
    mask = torch.ones_like(ids)
    mask[2, 10:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100  # a prompt without loss
    out = evaluate(SplitModel(model, 2), Encoded(ids, mask, labels), batch_size=4)
    whole = model(input_ids=ids, attention_mask=mask, labels=labels).loss.detach()
    assert out["loss"] == pytest.approx(float(whole), rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(float(whole)), rel=1e-5)


def test_accuracy_is_the_share_of_correct_argmax() -> None:
    model = small_model("bert")
    apply_lora(model, {(0, "value"): 2})
    model.eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 300, (10, 8), generator=gen)
    mask = torch.ones_like(ids)
    logits = model(input_ids=ids, attention_mask=mask).logits
    labels = logits.argmax(-1)
    labels[:3] = 1 - labels[:3]  # three wrong
    out = evaluate(SplitModel(model, 1), Encoded(ids, mask, labels), batch_size=4)
    assert out["accuracy"] == pytest.approx(0.7)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_greedy_generation_through_the_split_equals_huggingface_generate(family: str) -> None:
    model = small_model(family)
    apply_lora(model, {(0, "query"): 4, (2, "value"): 2})
    randomise_b(model)
    model.eval()
    prompt = [5, 17, 42, 8]
    eos = 299
    mine = generate(SplitModel(model, 2), prompt, max_new_tokens=12, eos_id=eos)
    theirs = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=eos,
                            pad_token_id=eos, attention_mask=torch.ones(1, 4, dtype=torch.long))
    expected = theirs[0, len(prompt):].tolist()
    if eos in expected:
        expected = expected[:expected.index(eos)]
    assert mine == expected


def test_beam_search_finds_a_continuation_at_least_as_likely_as_greedy() -> None:
    model = small_model("gpt2")
    apply_lora(model, {(0, "query"): 4})
    randomise_b(model)
    model.eval()
    split = SplitModel(model, 2)
    prompt = [3, 9, 27]

    def logprob(tokens):
        ids = torch.tensor([prompt + tokens])
        with torch.no_grad():
            logp = torch.log_softmax(split.logits(ids, torch.ones_like(ids))[0, :-1], -1)
        return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(tokens)))

    greedy = generate(split, prompt, 6, eos_id=299, num_beams=1)
    beam = generate(split, prompt, 6, eos_id=299, num_beams=4)
    assert len(beam) == len(greedy) == 6
    assert logprob(beam) >= logprob(greedy) - 1e-5
    assert beam == generate(split, prompt, 6, eos_id=299, num_beams=4)  # deterministic


def test_text_scores_perfect_and_poor() -> None:
    refs = [["the cat sat on the mat", "a cat was on the mat"], ["it rains in spain"]]
    perfect = text_scores(["the cat sat on the mat", "it rains in spain"], refs)
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rouge_l"] == pytest.approx(100.0)
    poor = text_scores(["dogs bark loudly", "sunny weather today"], refs)
    assert poor["bleu"] < 10 and poor["rouge_l"] < 30


def test_evaluation_batches_by_length_and_cuts_the_padding_without_changing_the_scores() -> None:
    """Padded rows of mixed lengths: the model sees each batch only up to its longest row's last token, and the
    loss and accuracy are those of the whole model on every row alone, unpadded."""
    model = small_model("bert")
    apply_lora(model, {(0, "value"): 2})
    randomise_b(model)
    model.eval()
    gen = torch.Generator().manual_seed(1)
    lengths = [3, 12, 5, 12, 2, 7, 9, 4, 6, 11]
    ids = torch.randint(1, 300, (len(lengths), 16), generator=gen)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = ids.masked_fill(mask == 0, 0)
    labels = torch.randint(0, 2, (len(lengths),), generator=gen)
    split = SplitModel(model, 1)
    widths: list[tuple[int, int]] = []
    logits_of = split.logits

    def recorded(batch_ids, batch_mask):
        widths.append((len(batch_ids), batch_ids.shape[1]))
        assert bool(batch_mask[:, -1].any())  # no column that every row pads
        return logits_of(batch_ids, batch_mask)

    split.logits = recorded
    out = evaluate(split, Encoded(ids, mask, labels), batch_size=3)
    ordered = sorted(lengths)
    assert widths == [(len(ordered[i:i + 3]), max(ordered[i:i + 3])) for i in range(0, len(ordered), 3)]
    with torch.no_grad():
        alone = torch.cat([model(input_ids=ids[i:i + 1, :n], attention_mask=mask[i:i + 1, :n]).logits
                           for i, n in enumerate(lengths)])
    loss = torch.nn.functional.cross_entropy(alone, labels)
    assert out["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert out["accuracy"] == float((alone.argmax(-1) == labels).float().mean())


def test_a_label_past_the_mask_keeps_its_column() -> None:
    """Causal LM: a column counts while a label does, even where the mask is zero there."""
    model = small_model("gpt2")
    model.eval()
    ids = torch.randint(1, 300, (2, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.zeros_like(ids)
    mask[:, :4] = 1
    labels = torch.full_like(ids, -100)
    labels[0, 1:4] = ids[0, 1:4]
    labels[1, 6] = ids[1, 6]  # past the mask: it must still be scored
    full = evaluate(SplitModel(model, 2), Encoded(ids, mask, labels), batch_size=2)
    whole = model(input_ids=ids, attention_mask=mask, labels=labels).loss.detach()
    assert full["loss"] == pytest.approx(float(whole), rel=1e-5)
