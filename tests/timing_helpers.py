"""A synthetic timing profile whose every piece is `launch + per_token x batch x seq` seconds (the context:
`launch + c x batch x seq^2`): linear in batch at each grid seq, so the profile's interpolation must reproduce it
exactly on grid rows anywhere in batch (and above the grid). Tests use it where a measured profile would make the
expected values unknowable."""

from __future__ import annotations

from pathlib import Path

from hsplit_actors.costmodel import ModelArch
from hsplit_actors.timing.calibrate import write
from hsplit_actors.timing.profile import FORMAT_VERSION, KIND, MODEL_FIELDS, PIECES, RANKED_PIECES

SEQ = [8, 16, 32, 64]
BATCH = [1, 2, 4, 8]
RANKS = [0, 4, 16]


def piece_time(name: str, batch: float, seq: float) -> float:
    """The synthetic law: each piece has its own launch cost and per-token cost (ranks add to both)."""
    rank = int(name.rsplit("_r", 1)[1]) if "_r" in name else 0
    if name == "context":
        return 5e-5 + 1e-8 * batch * seq * seq
    launch = {"embed": 1e-4, "head": 3e-4, "block": 5e-4}[name.split("_")[0]] * (1 + rank / 16)
    per_token = {"fwd": 1e-6, "fwdbwd": 3e-6, "noinput": 2e-6}[name.split("_")[-1 if "_r" not in name else -2]]
    return launch + per_token * (1 + rank / 32) * batch * seq


def optimizer_time(rank: int) -> float:
    return 2e-5 * rank


def synthetic_profile(arch: ModelArch, dtype: str = "float32", threads: int = 2, scale: float = 1.0,
                      **changes) -> dict:
    """`scale` multiplies every time (a slower machine)."""
    names = [*PIECES, *(f"{p}_r{r}" for p in RANKED_PIECES for r in RANKS)]
    table = {n: {"median": [[scale * piece_time(n, b, s) for b in BATCH] for s in SEQ],
                 "iqr": [[0.0] * len(BATCH) for _ in SEQ]} for n in names}
    raw = {"kind": KIND, "format": FORMAT_VERSION,
           "model": {"name": "synthetic", **{k: getattr(arch, k) for k in MODEL_FIELDS}},
           "dtype": dtype, "device": "cpu", "adapter_matrices": list(arch.matrices),
           "grid": {"seq": SEQ, "batch": BATCH, "ranks": RANKS, "threads": [threads]},
           "default_threads": threads, "tables": {threads: table},
           "optimizer": {threads: [optimizer_time(r) for r in RANKS]}}
    raw.update(changes)
    return raw


def write_profile(path: Path, arch: ModelArch, **changes) -> Path:
    write(synthetic_profile(arch, **changes), path)
    return path
