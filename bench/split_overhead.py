"""Split vs whole model, and adapter export/import/merge (issue 3's benchmark).

Same model, same adapters, same batch, timed side by side in one process: the whole model's forward+backward
against the split's client forward, server forward+loss+backward, and client backward with the returned
activation gradient. Timings alternate between the two (whole, split, whole, split, ...) and report medians.

    python bench/split_overhead.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hsplit_actors.model import SplitModel, apply_lora, export_adapters, import_adapters, merge_delta
from hsplit_actors.model.loading import load_model


def whole_step(model, ids, mask, labels) -> None:
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(name: str, model, split_point: int, ids, mask, labels, repeats: int) -> None:
    split = SplitModel(model, split_point)
    model.train()
    whole, parts = [], []
    for _ in range(3):  # warm-up
        whole_step(model, ids, mask, labels)
        split.step(ids, mask, labels)
        model.zero_grad(set_to_none=True)
    for _ in range(repeats):
        whole.append(timed(lambda: whole_step(model, ids, mask, labels)))
        model.zero_grad(set_to_none=True)
        parts.append(timed(lambda: split.step(ids, mask, labels)))
        model.zero_grad(set_to_none=True)
    w, s = statistics.median(whole), statistics.median(parts)
    print(f"{name:<34} split at {split_point}: whole {1000 * w:7.1f} ms  split {1000 * s:7.1f} ms  "
          f"ratio {s / w:.3f}")


def adapters_timing(repeats: int) -> None:
    model = load_model(task="classification", preset="minilm-l6")
    matrices = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
    apply_lora(model, {(b, m): 16 for b in range(6) for m in matrices})
    export_s, import_s, merge_s = [], [], []
    for _ in range(repeats):
        export_s.append(timed(lambda: export_adapters(model)))
        adapters = export_adapters(model)
        import_s.append(timed(lambda a=adapters: import_adapters(model, a)))

        def merge_all(a=adapters):
            for key, f in a.items():
                merge_delta(model, key, (f.scale * f.B, f.A))

        merge_s.append(timed(merge_all))
    e, i, m = (1000 * statistics.median(x) for x in (export_s, import_s, merge_s))
    print(f"MiniLM adapters, rank 16 on all 36 matrices: export {e:.2f} ms, import {i:.2f} ms, merge {m:.2f} ms, "
          f"total {e + i + m:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    minilm = load_model(task="classification", preset="minilm-l6")
    apply_lora(minilm, {(b, m): 8 for b in range(6) for m in ("query", "value")})
    ids = torch.randint(1000, 20000, (16, 64))
    mask = torch.ones_like(ids)
    compare("MiniLM, batch 16 x 64", minilm, 3, ids, mask, torch.randint(0, 2, (16,)), args.repeats)

    gpt2 = load_model(task="causal_lm", preset="gpt2-small", seed=0)
    apply_lora(gpt2, {(b, m): 4 for b in range(12) for m in ("query", "value")})
    ids = torch.randint(0, 50257, (4, 128))
    compare("GPT-2 small shape, batch 4 x 128", gpt2, 6, ids, torch.ones_like(ids), ids, max(5, args.repeats // 3))

    adapters_timing(args.repeats)


if __name__ == "__main__":
    main()
