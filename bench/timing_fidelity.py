"""How well do phase durations predicted from a measured profile match the phases measured on this machine, and
how well does the FLOPs model do on the same points?

For each model, the profile is calibrated here (or read with --profile), then held-out points — batch sizes,
sequence lengths, split points and rank patterns that are not in the calibration grid — are timed for real: the
split model's client forward, its client backward (with the client's optimiser step) and the server step (server
part forward, loss, backward, optimiser step), each with torch.utils.benchmark. The FLOPs model gets its best
shot: one sustained FLOP/s fitted (median ratio) on the same calibration measurements the profile holds.

    python bench/timing_fidelity.py                      # MiniLM and a GPT-2-shaped model, on the CPU
    python bench/timing_fidelity.py --models minilm-l6 --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.utils import benchmark  # noqa: E402

from hsplit_actors.costmodel import ClientConfig, ModelArch  # noqa: E402
from hsplit_actors.costmodel.costs import _block_pass, iteration_cost  # noqa: E402
from hsplit_actors.costmodel.presets import build_config  # noqa: E402
from hsplit_actors.model.lora import apply_lora  # noqa: E402
from hsplit_actors.model.split import SplitModel  # noqa: E402
from hsplit_actors.timing.calibrate import Request, calibrate, write  # noqa: E402
from hsplit_actors.timing.profile import from_data, load_profile  # noqa: E402

# model -> (config overrides, task, calibration grid, held-out points (batch, seq, split, {matrix: rank}))
MODELS = {
    "minilm-l6": ({}, "classification", dict(seq=(16, 32, 64, 128), batch=(1, 2, 4, 8, 16, 32), ranks=(0, 8, 32)), [
        (3, 48, 2, {"query": 4, "value": 4}),
        (12, 24, 1, {"query": 16, "value": 16}),
        (6, 96, 3, {m: 4 for m in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")}),
        (16, 48, 4, {"query": 12, "value": 12, "ffn_in": 4}),
        (24, 40, 5, {"query": 8, "value": 8}),
        (5, 112, 2, {"query": 20, "key": 6, "value": 20}),
    ]),
    # GPT-2-small-shaped blocks and head (768 wide, vocab 50257), 4 blocks deep to keep the bench short
    "gpt2-small": ({"n_layer": 4}, "causal_lm", dict(seq=(16, 32, 64), batch=(1, 2, 4, 8), ranks=(0, 8, 32)), [
        (3, 24, 1, {"query": 4, "value": 4}),
        (6, 48, 2, {"query": 16, "value": 16}),
        (2, 40, 3, {m: 4 for m in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")}),
        (5, 20, 2, {"query": 12, "value": 12, "ffn_in": 4}),
    ]),
}


def measure(stmt, min_run_time: float, sync) -> float:
    stmt()
    sync()
    timer = benchmark.Timer(stmt="stmt(); sync()", globals={"stmt": stmt, "sync": sync},
                            num_threads=torch.get_num_threads())
    return float(timer.blocked_autorange(min_run_time=min_run_time).median)


def measured_phases(model, arch: ModelArch, config: ClientConfig, batch: int, seq: int, device, dtype, sync,
                    min_run_time: float) -> tuple[float, float, float]:
    """The three compute phases of one split iteration at `config`, run by the project's split model."""
    ranks = {(b, m): r for b, row in enumerate(config.ranks) for m, r in zip(arch.matrices, row, strict=True) if r}
    apply_lora(model, ranks)
    model.to(device).train()
    split = SplitModel(model, config.split_point)
    g = torch.Generator().manual_seed(batch * 31 + seq)
    ids = torch.randint(0, arch.vocab, (batch, seq), generator=g).to(device)
    mask = torch.ones(batch, seq, dtype=torch.long, device=device)
    labels = (torch.randint(0, arch.num_labels, (batch,), generator=g) if arch.task == "classification"
              else ids.cpu()).to(device)
    client_params = [p for p in split.client.parameters() if p.requires_grad]
    server_params = [p for p in split.server.parameters() if p.requires_grad]
    client_opt = torch.optim.AdamW(client_params, lr=1e-4)
    server_opt = torch.optim.AdamW(server_params, lr=1e-4)
    h = split.client(ids, mask).detach()
    grad = torch.randn_like(h)

    def client_fwd():
        split.client(ids, mask)

    def client_step():
        split.client(ids, mask).backward(grad)
        client_opt.step()
        client_opt.zero_grad(set_to_none=True)

    def server_step():
        received = h.detach().requires_grad_(True)
        split.loss(split.server(received, mask), labels).backward()
        server_opt.step()
        server_opt.zero_grad(set_to_none=True)

    with torch.autocast(device.type, dtype=dtype, enabled=False):
        fwd = measure(client_fwd, min_run_time, sync)
        fwdbwd = measure(client_step, min_run_time, sync)
        server = measure(server_step, min_run_time, sync)
    return fwd, max(0.0, fwdbwd - fwd), server


def fitted_flops(profile, arch: ModelArch) -> float:
    """The FLOPs model's one free number, fitted on the calibration grid: median FLOP / s of the block
    forward+backward measurements (input needing a gradient, every matrix adapted at each grid rank)."""
    ratios = []
    t = profile.default_threads
    for r in profile.ranks:
        row = tuple(r for _ in arch.matrices)
        for i, s in enumerate(profile.seq):
            for j, b in enumerate(profile.batch):
                p = _block_pass(arch, row, b, s, True, arch.family in ("gpt2", "bert"))
                ratios.append((p.fwd + p.bwd) / profile.tables[t][f"block_fwdbwd_r{r}"].median[i, j])
    return float(np.median(ratios))


def run_model(name: str, args) -> pd.DataFrame:
    overrides, task, grid, points = MODELS[name]
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    if args.profile:
        profile = load_profile(args.profile)
    else:
        print(f"[{name}] calibrating on {args.device} ...", flush=True)
        raw = calibrate(Request(name, args.device, args.dtype, task, grid["seq"], grid["batch"], grid["ranks"],
                                (torch.get_num_threads(),), args.min_run_time, blocks=args.blocks,
                                overrides=tuple(overrides.items())))
        if args.save:
            path = Path(args.save) / f"{name}-{args.device}.yaml"
            write(raw, path)
            profile = load_profile(path)
        else:
            profile = from_data(raw, f"<{name} calibration>")
    config = build_config(name, overrides | ({"num_labels": 2} if task == "classification" else {}))
    arch = ModelArch.from_hf_config(config, task=task)
    from hsplit_actors.model.loading import _model_class

    torch.manual_seed(0)
    model = _model_class(task).from_config(config, dtype=torch.float32).to(device=device, dtype=dtype)
    flops_per_s = fitted_flops(profile, arch)
    configs = [ClientConfig.from_pattern(arch, split, {(b, m): r for b in range(arch.n_layers)
                                                       for m, r in pattern.items()})
               for _, _, split, pattern in points]
    # every point measured in `repeats` interleaved passes: this machine's speed drifts by tens of percent
    # between minutes, and the median over passes keeps one slow minute from reading as a prediction error
    runs = np.zeros((args.repeats, len(points), 3))
    for rep in range(args.repeats):
        for i, ((batch, seq, split, pattern), config_) in enumerate(zip(points, configs, strict=True)):
            print(f"[{name}] pass {rep + 1}/{args.repeats}: batch {batch} x seq {seq}, split {split}, ranks "
                  f"{pattern}", flush=True)
            runs[rep, i] = measured_phases(model, arch, config_, batch, seq, device, dtype, sync,
                                           args.min_run_time * 2)
    rows = []
    for i, ((batch, seq, split, pattern), config_) in enumerate(zip(points, configs, strict=True)):
        predicted = profile.phases(arch, config_, batch, seq)
        cost = iteration_cost(arch, config_, batch, seq, args.dtype)
        flops = (cost.client_fwd_flops, cost.client_bwd_flops, cost.server_flops)
        for j, (phase, p, f) in enumerate(zip(("client_fwd", "client_bwd", "server"), predicted, flops,
                                              strict=True)):
            m = float(np.median(runs[:, i, j]))
            rows.append({"model": name, "batch": batch, "seq": seq, "split": split,
                         "ranks": ",".join(f"{k}:{v}" for k, v in pattern.items()), "phase": phase,
                         "measured_ms": 1e3 * m,
                         "spread_%": 100 * (runs[:, i, j].max() - runs[:, i, j].min()) / m,
                         "profile_ms": 1e3 * p, "flops_ms": 1e3 * f / flops_per_s,
                         "fitted_gflops": flops_per_s / 1e9})
    frame = pd.DataFrame(rows)
    frame["profile_err_%"] = 100 * (frame["profile_ms"] / frame["measured_ms"] - 1)
    frame["flops_err_%"] = 100 * (frame["flops_ms"] / frame["measured_ms"] - 1)
    return frame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="minilm-l6,gpt2-small")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--profile", help="use this profile instead of calibrating (one model only)")
    parser.add_argument("--save", help="folder to keep the calibrated profiles in")
    parser.add_argument("--min-run-time", type=float, default=0.2)
    parser.add_argument("--blocks", type=int, default=4, help="blocks timed in turn during calibration")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved passes over the held-out points")
    parser.add_argument("--csv", help="write the table here too")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    frames = [run_model(name, args) for name in args.models.split(",")]
    table = pd.concat(frames, ignore_index=True)
    pd.set_option("display.width", 200)
    print(table.drop(columns="fitted_gflops").round(2).to_string(index=False))
    for name, part in table.groupby("model", sort=False):
        pe, fe = part["profile_err_%"].abs(), part["flops_err_%"].abs()
        print(f"{name}: profile |error| median {pe.median():.1f}%, worst {pe.max():.1f}%; FLOPs model "
              f"({part['fitted_gflops'].iloc[0]:.1f} GFLOP/s fitted on the grid) median {fe.median():.1f}%, "
              f"worst {fe.max():.1f}%  [{len(part)} phases; measurement spread over passes: median "
              f"{part['spread_%'].median():.0f}%]")
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
