"""Evaluation through a split model's two parts (nothing re-assembled): loss, perplexity, accuracy, and for E2E
generation (greedy or beam) scored with BLEU (sacrebleu) and ROUGE-L (rouge-score)."""

from __future__ import annotations

import math

import torch

from hsplit_actors.data.datasets import IGNORE, Encoded
from hsplit_actors.model.split import SplitModel


@torch.no_grad()
def evaluate(split: SplitModel, data: Encoded, batch_size: int = 32) -> dict[str, float]:
    """Classification: mean loss and accuracy. Causal LM: token-weighted loss and perplexity."""
    was_training = split.model.training
    split.model.eval()
    total_loss = total_correct = total_count = 0.0
    classification = data.labels.dim() == 1
    for ids, mask, labels in by_length(data, batch_size):
        logits = split.logits(ids, mask)
        if classification:
            total_loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            total_correct += float((logits.argmax(-1) == labels).sum())
            total_count += len(labels)
        else:
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
            total_loss += float(torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                ignore_index=IGNORE, reduction="sum"))
            total_count += float((shift_labels != IGNORE).sum())
    split.model.train(was_training)
    loss = total_loss / max(total_count, 1)
    if classification:
        return {"loss": loss, "accuracy": total_correct / max(total_count, 1)}
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def by_length(data: Encoded, batch_size: int):
    """Batches of examples of similar length, each cut after its longest one's last token. Padding is most of an
    evaluation set's tokens (SST-2's dev sentences: 25 of 48 on average, and nearly every batch in file order holds
    one of 48); trailing columns that every mask zeroes (and no label counts) change nothing but the cost."""
    real = data.attention_mask.ne(0)
    if data.labels.dim() == 2:
        real |= data.labels.ne(IGNORE)
    lengths = real.shape[1] - torch.argmax(real.flip(1).to(torch.int8), dim=1)  # after the last real token
    lengths = torch.where(real.any(1), lengths, 1)
    order = torch.argsort(lengths, stable=True)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        ids, batch_mask, labels = data.take(index)
        keep = int(lengths[index].max())
        yield ids[:, :keep], batch_mask[:, :keep], labels if labels.dim() == 1 else labels[:, :keep]


@torch.no_grad()
def generate(split: SplitModel, prompt: list[int], max_new_tokens: int, eos_id: int, num_beams: int = 1) -> list[int]:
    """Continue one prompt greedily (num_beams = 1) or by beam search; returns the new tokens (eos excluded).
    Each step runs both parts on the whole sequence: no cache crosses the split."""
    beams: list[tuple[list[int], float]] = [(list(prompt), 0.0)]
    finished: list[tuple[list[int], float]] = []
    for _ in range(max_new_tokens):
        ids = torch.tensor([seq for seq, _ in beams])
        logits = split.logits(ids, torch.ones_like(ids))[:, -1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        if num_beams == 1:
            token = int(logp[0].argmax())
            if token == eos_id:
                return beams[0][0][len(prompt):]
            beams = [(beams[0][0] + [token], 0.0)]
            continue
        top, idx = logp.topk(num_beams, dim=-1)
        candidates = [(seq + [int(t)], score + float(s)) for (seq, score), row_s, row_t in zip(beams, top, idx,
                                                                                             strict=True)
                      for s, t in zip(row_s, row_t, strict=True)]
        candidates.sort(key=lambda c: c[1], reverse=True)
        beams = []
        for seq, score in candidates:
            if seq[-1] == eos_id:
                finished.append((seq[:-1], score / (len(seq) - len(prompt))))  # length-normalised
            else:
                beams.append((seq, score))
            if len(beams) == num_beams:
                break
        if len(finished) >= num_beams or not beams:
            break
    if num_beams == 1:
        return beams[0][0][len(prompt):]
    finished.extend((seq, score / max(len(seq) - len(prompt), 1)) for seq, score in beams)
    return max(finished, key=lambda c: c[1])[0][len(prompt):]


def text_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU over all references (sacrebleu) and mean ROUGE-L F1, best reference per hypothesis."""
    import sacrebleu
    from rouge_score import rouge_scorer

    depth = max(len(r) for r in references)
    streams = [[refs[i] if i < len(refs) else refs[0] for refs in references] for i in range(depth)]
    bleu = sacrebleu.corpus_bleu(hypotheses, streams).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [max(scorer.score(ref, hyp)["rougeL"].fmeasure for ref in refs)
             for hyp, refs in zip(hypotheses, references, strict=True)]
    return {"bleu": bleu, "rouge_l": 100.0 * sum(rouge) / max(len(rouge), 1)}


def e2e_generation_scores(split: SplitModel, tokenizer, mrs: list[str], references: list[list[str]],
                          limit: int = 50, max_new_tokens: int = 48, num_beams: int = 1) -> dict[str, float]:
    """Generate a text for the first `limit` MRs and score them against all their references."""
    from hsplit_actors.data.datasets import e2e_prompt

    was_training = split.model.training
    split.model.eval()
    mrs, references = mrs[:limit], references[:limit]
    hypotheses = []
    for mr in mrs:
        tokens = generate(split, tokenizer.encode(e2e_prompt(mr)), max_new_tokens, tokenizer.eos_token_id,
                          num_beams)
        hypotheses.append(tokenizer.decode(tokens).strip())
    split.model.train(was_training)
    return text_scores(hypotheses, references) | {"samples": len(hypotheses)}
