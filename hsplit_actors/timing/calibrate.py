"""`hsplit calibrate`: time the model's pieces on this machine and write a profile (see `profile.py`).

The pieces are run through the same family code the split model runs (`Family.embed / run_block / head / loss`,
peft adapters from `apply_lora`), on a model built from the config with a few blocks (4) timed in turn and
divided by their number: blocks are identical, so one block's time serves any depth, and a 7B model's few blocks
fit where the whole model would not. Timing is
`torch.utils.benchmark.Timer.blocked_autorange` (warm-up, then blocks of runs until `min_run_time`), which reports
the median and the interquartile range kept in the profile as dispersion. A backward cannot run without its
forward, so each backward is measured as forward+backward and the forward subtracted at prediction time.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hsplit_actors.costmodel.arch import ModelArch
from hsplit_actors.costmodel.presets import PRESETS, build_config, load_config
from hsplit_actors.errors import ScenarioError
from hsplit_actors.timing.profile import FORMAT_VERSION, KIND, MODEL_FIELDS

LAYER_KEY = {"gpt2": "n_layer", "bert": "num_hidden_layers", "llama": "num_hidden_layers"}
DEFAULT_SEQ = (16, 32, 64, 128)
DEFAULT_BATCH = (1, 2, 4, 8, 16, 32)
DEFAULT_RANKS = (0, 8, 32)


@dataclass(frozen=True)
class Request:
    """What to calibrate: a preset name or a model directory, and the grid."""

    model: str
    device: str = "cpu"
    dtype: str = "float32"
    task: str | None = None  # default: classification for BERT, causal_lm otherwise
    seq: tuple[int, ...] = DEFAULT_SEQ
    batch: tuple[int, ...] = DEFAULT_BATCH
    ranks: tuple[int, ...] = DEFAULT_RANKS
    threads: tuple[int, ...] = ()  # default: 1 and this process's torch thread count
    min_run_time: float = 0.2
    blocks: int = 4  # blocks timed in turn, each piece's time divided by them (see `calibrate`)
    overrides: tuple[tuple[str, Any], ...] = ()
    repeats: int = 3  # independent passes over the whole grid, interleaved: their spread is the recorded IQR


def _config(request: Request) -> tuple[Any, str]:
    """The model's config with one block, and its name for the profile."""
    if request.model in PRESETS:
        family = PRESETS[request.model][0]
        config = build_config(request.model, dict(request.overrides))
        name = request.model
    else:
        path = Path(request.model)
        if not (path / "config.json").is_file():
            raise ScenarioError(f"{request.model!r} is neither a preset ({', '.join(PRESETS)}) nor a model "
                                "directory with a config.json", field="--model")
        config = load_config(str(path))
        for key, value in request.overrides:
            setattr(config, key, value)
        family = "llama" if config.model_type in ("llama", "qwen2", "mistral") else config.model_type
        name = str(path.resolve())
    if family not in LAYER_KEY:
        raise ScenarioError(f"model type {family!r} cannot be calibrated; use a gpt2, llama or bert model",
                            field="--model")
    return config, name


def machine() -> dict[str, Any]:
    """Where the profile was measured: enough to tell two machines apart when reading a profile later."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "hostname": platform.node()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    from hsplit_actors import __version__

    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "transformers": transformers.__version__, "peft": peft.__version__, "hsplit_actors": __version__}


def calibrate(request: Request, on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every piece over the grid; returns the profile as plain data (what `write` saves)."""
    import torch

    if request.device == "cuda" and not torch.cuda.is_available():
        raise ScenarioError("--device cuda but torch sees no CUDA device here; use --device cpu", field="--device")
    bench = _Bench.build(request)
    original_threads = torch.get_num_threads()
    threads = request.threads or tuple(sorted({1, original_threads}))
    try:
        tables, optimizer = _measure(request, bench, threads, on_step)
    finally:
        torch.set_num_threads(original_threads)
    return _profile(request, bench, threads, tables, optimizer)


@dataclass
class _Bench:
    """The model under the timer: `request.blocks` blocks of it on the device, with its family's pieces, and the
    timer and input builders every pass uses."""

    request: Request
    arch: ModelArch
    name: str
    model: Any
    family: Any
    matrices: list[str]
    device: Any
    dtype: Any
    sync: Callable[[], None]  # waits for the device (a no-op on CPU): part of every timed statement

    @classmethod
    def build(cls, request: Request) -> _Bench:
        import torch

        from hsplit_actors.model.families import family_of
        from hsplit_actors.model.loading import _model_class, _quiet_transformers

        config, name = _config(request)
        arch = ModelArch.from_hf_config(config, task=request.task)
        # Several blocks, run in turn: one block timed alone keeps its weights in the CPU's cache between runs,
        # which a deep model does not (measured: GPT-2-small blocks ~15% faster alone than inside a 4-block model).
        setattr(config, LAYER_KEY[arch.family], request.blocks)
        if arch.task == "classification":
            config.num_labels = arch.num_labels
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[request.dtype]
        device = torch.device(request.device)
        with _quiet_transformers(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = _model_class(arch.task).from_config(config, dtype=torch.float32)
        family = family_of(model)
        family.prepare(model)
        model.to(device=device, dtype=dtype).train()
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        return cls(request, arch, name, model, family, list(family.matrix_paths), device, dtype, sync)

    def measure(self, label: str, stmt: Callable[[], None], t: int, per: int = 1) -> float:
        """Median seconds of `stmt` in one pass, divided by the `per` blocks it runs."""
        from torch.utils import benchmark

        stmt()  # warm-up outside the timer too: first calls allocate and pick kernels
        self.sync()
        timer = benchmark.Timer(stmt="stmt(); sync()", globals={"stmt": stmt, "sync": self.sync}, num_threads=t,
                                label=label)
        m = timer.blocked_autorange(min_run_time=self.request.min_run_time)
        return float(m.median) / per

    def inputs(self, b: int, s: int, input_grad: bool):
        import torch

        arch, device = self.arch, self.device
        g = torch.Generator().manual_seed(b * 1009 + s)
        ids = torch.randint(0, arch.vocab, (b, s), generator=g).to(device)
        mask = torch.ones(b, s, dtype=torch.long, device=device)
        hidden = torch.randn(b, s, arch.hidden, generator=g).to(device=device, dtype=self.dtype)
        hidden.requires_grad_(input_grad)
        labels = (torch.randint(0, arch.num_labels, (b,), generator=g) if arch.task == "classification"
                  else ids.cpu())
        return ids, mask, hidden, labels.to(device)


def _measure(request: Request, bench: _Bench, threads: tuple[int, ...], on_step) -> tuple[dict, dict]:
    """Each point is measured `repeats` times in independent passes over the whole grid (pass 1 over every
    point, then pass 2, ...), so a slow spell of the machine lands on different points in different passes; the
    profile keeps the median of the passes and their interquartile range (the spread the machine really showed,
    which the IQR of one pass's back-to-back blocks hides: it read 0.0 almost everywhere, on a GPU and a loaded
    CPU)."""
    passes: list[dict[int, dict[str, np.ndarray]]] = []
    opt_passes: list[dict[int, list[float]]] = []
    for repeat in range(request.repeats):
        tables, optimizer = _one_pass(request, bench.model, bench.family, bench.matrices, threads, request.blocks,
                                      bench.measure, bench.inputs, bench.device, on_step, repeat)
        passes.append(tables)
        opt_passes.append(optimizer)
    tables = {t: {piece: {"median": np.median([p[t][piece] for p in passes], axis=0).tolist(),
                          "iqr": _iqr([p[t][piece] for p in passes]).tolist()} for piece in passes[0][t]}
              for t in threads}
    optimizer = {t: np.median([o[t] for o in opt_passes], axis=0).tolist() for t in threads}
    return tables, optimizer


def _profile(request: Request, bench: _Bench, threads: tuple[int, ...], tables: dict, optimizer: dict) -> dict:
    """The profile as plain data: the measurements with the model, machine, versions and method behind them."""
    return {
        "kind": KIND,
        "format": FORMAT_VERSION,
        "model": {"name": bench.name, **{k: getattr(bench.arch, k) for k in MODEL_FIELDS}},
        "dtype": request.dtype,
        "device": request.device,
        "machine": machine(),
        "versions": versions(),
        "measured_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "timer": {"tool": "torch.utils.benchmark.Timer.blocked_autorange", "min_run_time_s": request.min_run_time,
                  "repeats": request.repeats,
                  "statistic": "median of independent passes over the grid (interleaved); iqr is their "
                               "interquartile range"},
        "fit": "bilinear in (batch, seq); linear in batch above the grid; linear in rank between grid ranks",
        "blocks_in_turn": request.blocks,
        "adapter_matrices": bench.matrices,
        "grid": {"seq": list(request.seq), "batch": list(request.batch), "ranks": list(request.ranks),
                 "threads": list(threads)},
        "default_threads": max(threads),
        "tables": tables,
        "optimizer": optimizer,
    }


def _iqr(values: list) -> Any:
    """Interquartile range across passes, point by point."""
    stacked = np.asarray(values, dtype=float)
    return np.percentile(stacked, 75, axis=0) - np.percentile(stacked, 25, axis=0)


def _one_pass(request: Request, model, family, matrices, threads, blocks: int, measure, inputs, device,
              on_step, repeat: int) -> tuple[dict[int, dict[str, Any]], dict[int, list[float]]]:
    """Every piece at every grid point once: `tables[threads][piece]` (seq x batch medians) and the optimiser
    step per block at each rank."""
    import torch

    from hsplit_actors.model.lora import apply_lora

    tables: dict[int, dict[str, Any]] = {}
    optimizer: dict[int, list[float]] = {}
    prefix = f"pass {repeat + 1}/{request.repeats}: " if request.repeats > 1 else ""
    for t in threads:
        torch.set_num_threads(t)
        per: dict[str, Any] = {}

        def put(piece: str, i: int, j: int, value: float, per: dict = per) -> None:
            per.setdefault(piece, np.zeros((len(request.seq), len(request.batch))))[i, j] = value

        opt_times: list[float] = []
        for r in request.ranks:
            apply_lora(model, {(index, m): r for index in range(blocks) for m in matrices} if r else {})
            model.to(device=device).train()
            params = [p for n, p in model.named_parameters() if ".lora_" in n]
            if params:
                for p in params:
                    p.grad = torch.randn_like(p)
                opt = torch.optim.AdamW(params, lr=1e-4)
                opt_times.append(measure(f"optimizer r{r}", opt.step, t, blocks))
                for p in params:
                    p.grad = None
            else:
                opt_times.append(0.0)
            for i, s in enumerate(request.seq):
                for j, b in enumerate(request.batch):
                    if on_step:
                        on_step(f"{prefix}{t} threads, rank {r}, batch {b} x seq {s}")
                    for input_grad, piece in ((True, "block_fwdbwd"), (False, "block_fwdbwd_noinput")):
                        _, mask, hidden, _ = inputs(b, s, input_grad)
                        ctx = family.context(model, hidden, mask)
                        out = family.run_block(model, 0, hidden, ctx)
                        grad_out = torch.randn_like(out)

                        def fwd(hidden=hidden, ctx=ctx):
                            for index in range(blocks):
                                family.run_block(model, index, hidden, ctx)

                        def fwdbwd(hidden=hidden, ctx=ctx, grad_out=grad_out):
                            for index in range(blocks):
                                out = family.run_block(model, index, hidden, ctx)
                                if out.requires_grad:
                                    out.backward(grad_out)

                        if input_grad:
                            put(f"block_fwd_r{r}", i, j, measure("block fwd", fwd, t, blocks))
                        put(f"{piece}_r{r}", i, j, measure("block fwd+bwd", fwdbwd, t, blocks))
        optimizer[t] = opt_times
        apply_lora(model, {})
        model.to(device=device).train()
        for i, s in enumerate(request.seq):
            for j, b in enumerate(request.batch):
                if on_step:
                    on_step(f"{prefix}{t} threads, embeddings, context and head, batch {b} x seq {s}")
                ids, mask, hidden, labels = inputs(b, s, True)

                def embed(ids=ids):
                    family.embed(model, ids)

                def context(hidden=hidden, mask=mask):
                    family.context(model, hidden, mask)

                def head(hidden=hidden, labels=labels):
                    family.loss(model, family.head(model, hidden), labels)

                def head_bwd(hidden=hidden, labels=labels):
                    family.loss(model, family.head(model, hidden), labels).backward()

                put("embed_fwd", i, j, measure("embeddings", embed, t))
                put("context", i, j, measure("attention context", context, t))
                put("head_fwd", i, j, measure("head + loss", head, t))
                put("head_fwdbwd", i, j, measure("head + loss fwd+bwd", head_bwd, t))
        tables[t] = per
    return tables, optimizer


def dispersion(profile: dict[str, Any]) -> float:
    """Median relative IQR over every measured point: how steady the machine was while measuring."""
    import numpy as np

    ratios = []
    for per in profile["tables"].values():
        for grid in per.values():
            m, q = np.asarray(grid["median"]), np.asarray(grid["iqr"])
            ok = m > 0
            ratios.extend((q[ok] / m[ok]).ravel().tolist())
    return float(np.median(ratios)) if ratios else 0.0


def write(profile: dict[str, Any], path: str | Path) -> None:
    """YAML, with each table row on one line (a grid reads as the table it is)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def rows(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
        flat = all(not isinstance(v, (list, dict)) for v in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)

    Dumper.add_representer(list, rows)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.dump(_rounded(profile), Dumper=Dumper, sort_keys=False, width=120))


def _rounded(value: Any) -> Any:
    """Seconds to 4 significant digits (the timer's dispersion is far larger); keeps the file readable."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
