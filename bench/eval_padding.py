"""Evaluation by length against evaluation in file order at full width (the evaluation before `metrics.by_length`).

The global model of the Flower comparison's job (pretrained MiniLM with rank-4 query/value LoRA, its adapters'
B made non-zero so the scores mean something) on GLUE's 872 SST-2 dev sentences padded to 48 tokens, batches of
64, as the server evaluates: the two ways alternate, `--repeats` times each, in one process with the threads
given; reports median wall times, their ratio, the tokens each feeds the model, and both ways' scores.

    python bench/eval_padding.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.flower_vs_hsplit import JOB  # noqa: E402
from hsplit_actors.data.datasets import Encoded  # noqa: E402
from hsplit_actors.metrics import by_length, evaluate  # noqa: E402
from hsplit_actors.model import SplitModel, apply_lora  # noqa: E402
from hsplit_actors.preparation import prepare  # noqa: E402
from hsplit_actors.scenario import parse_scenario  # noqa: E402
from hsplit_actors.training.setup import base_model, training_data  # noqa: E402


@torch.no_grad()
def in_file_order(split: SplitModel, data: Encoded, batch_size: int) -> dict[str, float]:
    """The evaluation as it was: consecutive rows, every column."""
    split.model.eval()
    loss = correct = 0.0
    for start in range(0, len(data), batch_size):
        ids, mask, labels = data.take(range(start, min(start + batch_size, len(data))))
        logits = split.logits(ids, mask)
        loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += float((logits.argmax(-1) == labels).sum())
    return {"loss": loss / len(data), "accuracy": correct / len(data)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scenario = parse_scenario(yaml.safe_dump(JOB))
    setup = prepare(scenario)
    data = training_data(scenario, len(setup.fleet))
    test = Encoded(*(torch.from_numpy(data.test[k]) for k in ("input_ids", "attention_mask", "labels")))
    model, _, _ = base_model(scenario, setup.arch)
    apply_lora(model, {(b, m): 4 for b in range(setup.arch.n_layers) for m in ("query", "value")}, seed=0)
    gen = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.05
    split = SplitModel(model, setup.arch.n_layers)
    ways = {"file order, full width": lambda: in_file_order(split, test, args.batch_size),
            "by length, cut": lambda: evaluate(split, test, args.batch_size)}
    times: dict[str, list[float]] = {w: [] for w in ways}
    scores = {w: fn() for w, fn in ways.items()}  # warm-up, and the scores
    for _ in range(args.repeats):
        for way, fn in ways.items():
            start = time.perf_counter()
            fn()
            times[way].append(time.perf_counter() - start)
    full = test.input_ids.numel()
    cut = sum(ids.numel() for ids, _, _ in by_length(test, args.batch_size))
    print(f"SST-2 dev, {len(test)} sentences x {test.input_ids.shape[1]} tokens, batches of {args.batch_size}, "
          f"{args.threads} thread(s), median of {args.repeats}:")
    for way in ways:
        tokens = full if way.startswith("file") else cut
        print(f"  {way:24s} {statistics.median(times[way]):7.3f} s   {tokens:6d} tokens fed   accuracy "
              f"{scores[way]['accuracy']:.6f}   loss {scores[way]['loss']:.9f}")
    a, b = (statistics.median(t) for t in times.values())
    print(f"  ratio (by length / file order): {b / a:.3f}")


if __name__ == "__main__":
    main()
