"""A measured timing profile (`hsplit calibrate` writes it) and the phase durations it predicts.

The profile holds, per thread count, the median time of each model piece over a grid of (batch, seq):
embeddings forward, the attention context (mask and positions) a part builds, one block's forward and
forward+backward at each LoRA rank of the grid (adapters on every adaptable matrix), the same block's
forward+backward when its input needs no gradient (a client's first block), head + loss forward and
forward+backward, and the optimiser step of one block's adapters.

Prediction is **bilinear interpolation** in (batch, seq), not a roofline fit. Why: the small jobs this project
simulates sit exactly where roofline models fail (launch overhead, cache effects, thread scheduling), and a dense
grid of real measurements interpolates them without a model of the hardware. Within a seq row time is close to
linear in batch, so batches above the grid (a batching server's summed jobs) are extrapolated linearly from the
last two batch points, with a warning; seq outside the grid is refused (attention grows with seq^2 there).
Ranks between grid ranks are interpolated linearly (LoRA's cost is linear in r); each adapted matrix adds an
equal share of the all-matrices increment, because at these sizes an adapter costs mostly its kernel launches.
"""

from __future__ import annotations

import warnings
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from hsplit_actors import strict_yaml
from hsplit_actors.costmodel.arch import ModelArch
from hsplit_actors.costmodel.config import ClientConfig

KIND = "hsplit-timing-profile"
FORMAT_VERSION = 1
# What must agree between the profile's model and the scenario's (blocks are measured one at a time, so the number
# of blocks may differ: a profile of one block serves any depth).
MODEL_FIELDS = ("family", "task", "hidden", "n_heads", "n_kv_heads", "head_dim", "ffn", "vocab", "num_labels")
PIECES = ("embed_fwd", "context", "head_fwd", "head_fwdbwd")
RANKED_PIECES = ("block_fwd", "block_fwdbwd", "block_fwdbwd_noinput")


class ProfileError(ValueError):
    """A profile that cannot be used: one line naming the file and what is wrong."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class ProfileExtrapolation(UserWarning):
    """A duration predicted outside the measured grid (linearly, from its last two points)."""


@dataclass(frozen=True)
class Grid:
    """Median seconds of one piece over seq (rows) x batch (columns)."""

    seq: tuple[int, ...]
    batch: tuple[int, ...]
    median: np.ndarray

    def at(self, batch: float, seq: float) -> float:
        """Bilinear in (batch, seq); batch above the grid extrapolates linearly from the last two columns."""
        rows = _bracket(self.seq, seq)
        values = [(_interp(self.batch, self.median[i], batch), w) for i, w in rows]
        return float(sum(v * w for v, w in values))


def _bracket(points: tuple[int, ...], x: float) -> list[tuple[int, float]]:
    """Indices and weights of the grid points around `x` (inside the grid)."""
    if len(points) == 1 or x <= points[0]:
        return [(0, 1.0)]
    if x >= points[-1]:
        return [(len(points) - 1, 1.0)]
    j = bisect_right(points, x)
    lo, hi = points[j - 1], points[j]
    w = (x - lo) / (hi - lo)
    return [(j - 1, 1.0 - w), (j, w)]


def _interp(points: tuple[int, ...], values: np.ndarray, x: float) -> float:
    if len(points) == 1:
        return float(values[0]) * x / points[0]
    if x > points[-1]:  # linear beyond the last point (checked and warned about by the caller)
        slope = (values[-1] - values[-2]) / (points[-1] - points[-2])
        return float(values[-1] + slope * (x - points[-1]))
    return float(np.interp(x, points, values))


@dataclass(eq=False)  # hashed by identity: predictions are cached per loaded profile
class Profile:
    """A loaded profile: `tables[threads][piece]` grids; `optimizer[threads]` seconds per block at each rank."""

    path: str
    model: dict[str, Any]
    dtype: str
    device: str
    threads: tuple[int, ...]
    default_threads: int
    seq: tuple[int, ...]
    batch: tuple[int, ...]
    ranks: tuple[int, ...]
    adapter_matrices: tuple[str, ...]
    tables: dict[int, dict[str, Grid]]
    optimizer: dict[int, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    # -- checks against a scenario ----------------------------------------------------------------------
    def check(self, arch: ModelArch, dtype: str, batch: int, seq: int, threads: int | None = None) -> None:
        """Refuse a profile measured for another model, dtype or thread count, or whose grid misses the job."""
        mine = {k: getattr(arch, k) for k in MODEL_FIELDS}
        if arch.task != "classification":
            mine.pop("num_labels")
        differ = [f"{k} {self.model.get(k)!r} (scenario: {v!r})" for k, v in mine.items() if self.model.get(k) != v]
        if differ:
            raise ProfileError(self.path, f"measured for another model ({self.model.get('name', '?')}): "
                               + ", ".join(differ) + "; run `hsplit calibrate` for this scenario's model")
        if self.dtype != dtype:
            raise ProfileError(self.path, f"measured in {self.dtype}, the scenario trains in {dtype}; run "
                               f"`hsplit calibrate --dtype {dtype}`")
        if threads is not None and threads not in self.tables:
            raise ProfileError(self.path, f"has no measurements at {threads} threads (measured: "
                               f"{list(self.threads)}); use one of them or calibrate with --threads {threads}")
        if not self.seq[0] <= seq <= self.seq[-1]:
            raise ProfileError(self.path, f"its grid covers seq {self.seq[0]}..{self.seq[-1]}, the scenario's "
                               f"seq_len is {seq}; calibrate with --seq covering it")
        if batch < self.batch[0]:
            raise ProfileError(self.path, f"its grid starts at batch {self.batch[0]}, the scenario's batch_size "
                               f"is {batch}; calibrate with --batch covering it")
        if batch > self.batch[-1]:
            raise ProfileError(self.path, f"its grid ends at batch {self.batch[-1]}, the scenario's batch_size is "
                               f"{batch}; calibrate with --batch covering it")

    # -- prediction ---------------------------------------------------------------------------------------
    def piece(self, name: str, batch: float, seq: int, threads: int) -> float:
        return max(0.0, self.tables[threads][name].at(batch, seq))

    def _ranked(self, name: str, rank_row: tuple[int, ...], arch: ModelArch, batch: float, seq: int,
                threads: int) -> float:
        """One block at a per-matrix rank row: the rank-0 time plus each adapted matrix's share of the increment."""
        base = self.piece(f"{name}_r0", batch, seq, threads)
        share = 1.0 / len(self.adapter_matrices)
        extra = 0.0
        for r in rank_row:
            if r:
                extra += share * (self._at_rank(name, r, batch, seq, threads) - base)
        return base + extra

    def _first_block_backward(self, rank_row: tuple[int, ...], arch: ModelArch, batch: float, seq: int,
                              threads: int) -> float:
        """Backward of a block whose input needs no gradient (the first adapted block on a device). Its cost is
        set by how far back the gradient must flow, not by how many matrices carry adapters: the gradient runs
        through the whole block to reach the attention's adapters. So it starts from the measured all-adapted
        backward at the smallest grid rank and swaps each matrix's adapter increment (from the input-gradient
        tables) for the one it has. An FFN-only pattern, whose gradient stops after the FFN, is overestimated."""
        ref = next(r for r in self.ranks if r > 0)
        back = self.piece(f"block_fwdbwd_noinput_r{ref}", batch, seq, threads) - self.piece(
            f"block_fwd_r{ref}", batch, seq, threads)

        def increment(r: int) -> float:  # one adapter's backward cost at rank r, over no adapter
            if r == 0:
                return 0.0
            with_r = self._at_rank("block_fwdbwd", r, batch, seq, threads) - self._at_rank(
                "block_fwd", r, batch, seq, threads)
            bare = self.piece("block_fwdbwd_r0", batch, seq, threads) - self.piece("block_fwd_r0", batch, seq,
                                                                                  threads)
            return (with_r - bare) / len(self.adapter_matrices)

        return max(0.0, back + sum(increment(r) - increment(ref) for r in rank_row))

    def _at_rank(self, name: str, r: int, batch: float, seq: int, threads: int) -> float:
        grid = [q for q in self.ranks if q > 0]
        if r in grid:
            return self.piece(f"{name}_r{r}", batch, seq, threads)
        points = (0, *grid)
        values = np.array([self.piece(f"{name}_r{q}", batch, seq, threads) for q in points])
        return _interp(points, values, r)

    def _optimizer(self, rank_row: tuple[int, ...], threads: int) -> float:
        share = 1.0 / len(self.adapter_matrices)
        return sum(share * _interp(self.ranks, self.optimizer[threads], r) for r in rank_row if r)

    def phases(self, arch: ModelArch, config: ClientConfig, batch: int, seq: int, threads: int | None = None,
               jobs: int = 1) -> tuple[float, float, float]:
        """(client forward, client backward, server) seconds of one iteration; the server part for `jobs`
        such iterations run as one batch. The split and 'does this block's input need a gradient' follow
        what autograd runs (as in the FLOPs model)."""
        return _phases(self, arch, config, batch, seq, threads or self.default_threads, jobs)


@lru_cache(maxsize=65536)
def _phases(profile: Profile, arch: ModelArch, config: ClientConfig, batch: int, seq: int, threads: int,
            jobs: int) -> tuple[float, float, float]:
    k, n = config.split_point, arch.n_layers

    def blocks(part: range, b: float, input_grad: bool) -> tuple[float, float]:
        fwd = bwd = 0.0
        rg = input_grad
        for i in part:
            row = config.ranks[i]
            f = profile._ranked("block_fwd", row, arch, b, seq, threads)
            fwd += f
            adapted = any(row)
            if rg:
                bwd += profile._ranked("block_fwdbwd", row, arch, b, seq, threads) - f
            elif adapted:
                bwd += profile._first_block_backward(row, arch, b, seq, threads)
            bwd += profile._optimizer(row, threads)
            rg = rg or adapted
        return fwd, max(0.0, bwd)

    def head(b: float) -> tuple[float, float]:
        f = profile.piece("head_fwd", b, seq, threads)
        return f, max(0.0, profile.piece("head_fwdbwd", b, seq, threads) - f)

    client_fwd = client_bwd = server = 0.0
    if k > 0:  # each part builds its own attention mask and positions (the context) once per pass
        client_fwd, client_bwd = blocks(range(k), batch, False)
        client_fwd += profile.piece("embed_fwd", batch, seq, threads) + profile.piece("context", batch, seq, threads)
        if k == n:
            hf, hb = head(batch)
            client_fwd, client_bwd = client_fwd + hf, client_bwd + hb
    if k < n:
        b = batch * jobs
        fwd, bwd = blocks(range(k, n), b, k > 0)
        hf, hb = head(b)
        server = fwd + bwd + hf + hb + profile.piece("context", b, seq, threads) + (
            profile.piece("embed_fwd", b, seq, threads) if k == 0 else 0.0)
    return client_fwd, client_bwd, server


# -- reading and writing --------------------------------------------------------------------------------------
def _ints(raw: Any, what: str, path: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                       for x in raw):
        raise ProfileError(path, f"`{what}` must be a non-empty list of whole numbers")
    if list(raw) != sorted(set(raw)):
        raise ProfileError(path, f"`{what}` must be increasing")
    return tuple(raw)


def _grid(raw: Any, seq: tuple[int, ...], batch: tuple[int, ...], what: str, path: str) -> Grid:
    try:
        median = np.asarray(raw["median"], dtype=float)
    except (TypeError, KeyError, ValueError):
        raise ProfileError(path, f"`{what}` needs a `median` table of numbers (seq rows x batch columns)") from None
    if median.shape != (len(seq), len(batch)) or not np.isfinite(median).all() or (median < 0).any():
        raise ProfileError(path, f"`{what}.median` must be {len(seq)} x {len(batch)} non-negative seconds "
                           f"(got shape {median.shape})")
    return Grid(seq, batch, median)


def from_data(raw: Any, path: str | Path) -> Profile:
    """A profile from its parsed YAML, every field checked (the file is data a user may have edited)."""
    path = str(path)
    if not isinstance(raw, dict) or raw.get("kind") != KIND:
        raise ProfileError(path, f"not a timing profile (expected `kind: {KIND}`); write one with "
                           "`hsplit calibrate`")
    if raw.get("format") != FORMAT_VERSION:
        raise ProfileError(path, f"profile format {raw.get('format')!r} is not {FORMAT_VERSION}; re-run "
                           "`hsplit calibrate`")
    for key in ("model", "dtype", "device", "grid", "tables", "optimizer", "adapter_matrices"):
        if key not in raw:
            raise ProfileError(path, f"missing `{key}`; re-run `hsplit calibrate`")
    model, grid = raw["model"], raw["grid"]
    if not isinstance(model, dict) or not isinstance(grid, dict):
        raise ProfileError(path, "`model` and `grid` must be mappings")
    seq = _ints(grid.get("seq"), "grid.seq", path)
    batch = _ints(grid.get("batch"), "grid.batch", path)
    ranks = _ints(grid.get("ranks"), "grid.ranks", path)
    threads = _ints(grid.get("threads"), "grid.threads", path)
    if ranks[0] != 0 or min(seq[0], batch[0], threads[0]) < 1:
        raise ProfileError(path, "grid.ranks must start at 0; seq, batch and threads at 1 or more")
    matrices = raw["adapter_matrices"]
    if not isinstance(matrices, list) or not matrices:
        raise ProfileError(path, "`adapter_matrices` must list the matrices the block pieces adapted")
    names = [*PIECES, *(f"{p}_r{r}" for p in RANKED_PIECES for r in ranks)]
    tables: dict[int, dict[str, Grid]] = {}
    optimizer: dict[int, np.ndarray] = {}
    for t in threads:
        per = raw["tables"].get(t) if isinstance(raw["tables"], dict) else None
        opt = raw["optimizer"].get(t) if isinstance(raw["optimizer"], dict) else None
        if not isinstance(per, dict) or opt is None:
            raise ProfileError(path, f"no tables for {t} threads, which grid.threads lists")
        missing = [n for n in names if n not in per]
        if missing:
            raise ProfileError(path, f"tables.{t} lacks {', '.join(missing[:3])}; re-run `hsplit calibrate`")
        tables[t] = {n: _grid(per[n], seq, batch, f"tables.{t}.{n}", path) for n in names}
        try:
            optimizer[t] = np.asarray(opt, dtype=float)
        except (TypeError, ValueError):
            optimizer[t] = np.zeros(0)
        if optimizer[t].shape != (len(ranks),) or not np.isfinite(optimizer[t]).all():
            raise ProfileError(path, f"optimizer.{t} must hold one time per grid rank ({len(ranks)})")
    default = raw.get("default_threads", threads[-1])
    if default not in tables:
        raise ProfileError(path, f"default_threads {default!r} is not in grid.threads {list(threads)}")
    return Profile(path, dict(model), str(raw["dtype"]), str(raw["device"]), threads, int(default), seq, batch,
                   ranks, tuple(matrices), tables, optimizer,
                   {k: raw.get(k) for k in ("machine", "versions", "measured_at", "timer", "fit")})


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int, size: int) -> Profile:
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise ProfileError(path, "not a text file; a timing profile is YAML written by `hsplit calibrate`") from None
    try:
        raw = strict_yaml.load(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file, reported in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProfileError(path, f"not readable YAML ({first})") from None
    return from_data(raw, path)


def load_profile(path: str | Path, base: str | Path | None = None) -> Profile:
    """Read and check a profile. A relative path is taken from `base` (the scenario's folder) where it exists
    there, else from the working directory: a scenario's `../profiles/x.yaml` must not meet a stray file that
    happens to lie at that place from wherever the command runs. Cached per file version."""
    p = Path(path)
    if not p.is_absolute() and base is not None and (Path(base) / p).exists():
        p = Path(base) / p
    if not p.is_file():
        raise ProfileError(str(path), "no such timing profile; give a file written by `hsplit calibrate`")
    st = p.stat()
    return _load_cached(str(p), st.st_mtime_ns, st.st_size)


def warn_beyond(profile: Profile, batch: int) -> None:
    """Say so when a batching server's summed batch lies above the measured grid (extrapolated linearly)."""
    if batch > profile.batch[-1]:
        warnings.warn(f"{profile.path}: server batches of up to {batch} samples lie above the profile's grid "
                      f"(batch <= {profile.batch[-1]}); their time is extrapolated linearly from its last two "
                      "points", ProfileExtrapolation, stacklevel=2)
