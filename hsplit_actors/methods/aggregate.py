"""How updates are combined, as pure functions every method uses: the data- and staleness-weighted combination
of deltas (`delta_mean`), FedAvg of A and B (`fedavg`, `weighted_head`), HetLoRA's zero-padded sparsity-weighted
average (`zero_pad_aggregate`), NAA's exact stacking (`stack`) and its zero-padded ablation (`zero_padded_average`).
An update is a `Trained`; its coefficient c_i = server_lr * w(staleness) scales what it contributes."""

from __future__ import annotations

from dataclasses import dataclass

Key = tuple[int, str]  # (block, matrix), blocks 0-based


@dataclass
class Trained:
    """One update: a participant's trained adapters (its device copy joined with its server-side copy), and what
    it is a delta against. `start` None: the current global version; else the (factors, head) of the version it
    downloaded. Keys (and head names) in `shared` are the shared server set's, which is always current."""

    client: int
    weight: float  # n_i, its number of training samples
    factors: dict  # Key -> LoRAFactors
    head: dict  # name -> tensor (a classification head; empty for language models)
    coefficient: float = 1.0  # server_lr * w(staleness) for what the client trained itself
    start: tuple[dict, dict] | None = None
    shared: frozenset = frozenset()
    shared_coefficient: float = 1.0  # server_lr: the shared set is never stale

    def coefficient_of(self, name) -> float:
        return self.shared_coefficient if name in self.shared else self.coefficient

    def start_of(self, name, current: dict, part: int):
        """What this update's copy of `name` started from: the current global's for the shared set and for an
        update on the current version, else its own version's (part 0: factors, 1: head)."""
        if self.start is None or name in self.shared:
            return current.get(name)
        return self.start[part].get(name)


def _or(value, default):
    return default if value is None else value


def delta_mean(items: list[tuple], current):
    """`current + sum_i c_i p_i (x_i - start_i)` over items (x, weight, coefficient, start), p normalised over
    the items. When every item started from `current` and no coefficient scales it, that is the plain weighted
    mean `sum_i p_i x_i`, computed as such (the sync case, bit for bit the classic FedAvg)."""
    total = sum(w for _, w, _, _ in items)
    if all(c == 1.0 and start is current for _, _, c, start in items) or current is None:
        return sum((w / total * c) * x for x, w, c, _ in items)
    return current + sum((w / total * c) * (x - start) for x, w, c, start in items)


def weighted_head(trained: list[Trained], current_head: dict | None = None) -> dict:
    """Per trainable head parameter, over the participants that hold it: the data-weighted mean of their deltas
    applied to the current head (the plain weighted mean when all started from it)."""
    current_head = current_head or {}
    head = {}
    for name in sorted({n for t in trained for n in t.head}):
        now = current_head.get(name)
        head[name] = delta_mean([(t.head[name], t.weight, t.coefficient_of(name),
                                  _or(t.start_of(name, current_head, 1), now)) for t in trained if name in t.head], now)
    return head


def fedavg(trained: list[Trained], current: tuple[dict, dict] = ({}, {})) -> tuple[dict, dict]:
    """Per matrix, the data-weighted mean of A and of B over the participants that hold it (one rank each),
    as deltas against what each started from, applied to the current global (SPEC §9)."""
    from hsplit_actors.model.factors import LoRAFactors

    factors = {}
    for key in sorted({k for t in trained for k in t.factors}):
        holders = [t for t in trained if key in t.factors]
        ranks = {t.factors[key].rank for t in holders}
        if len(ranks) > 1:
            raise ValueError(f"FedAvg of block {key[0]} {key[1]} needs one rank, got {sorted(ranks)}")
        now = current[0].get(key)
        starts = [t.start_of(key, current[0], 0) for t in holders]
        parts = []
        for side in ("A", "B"):
            base = None if now is None else getattr(now, side)
            parts.append(delta_mean([(getattr(t.factors[key], side), t.weight, t.coefficient_of(key),
                                      base if s is None else getattr(s, side))
                                     for t, s in zip(holders, starts, strict=True)], base))
        factors[key] = LoRAFactors(parts[0], parts[1], holders[0].factors[key].alpha)
    return factors, weighted_head(trained, current[1])


def zero_pad_aggregate(trained: list[Trained], current: dict | None = None) -> dict[Key, object]:
    """Per matrix: every copy's delta (against the first r_i ranks of what it started from) zero-padded to the
    global rank, weighted by `||s_i B_i A_i||_F` and the update's coefficient, added to the current global.
    Without a current global, the zero-padded weighted mean of the copies themselves."""
    import torch

    from hsplit_actors.model.factors import LoRAFactors

    current = current or {}
    out = {}
    for key in sorted({k for t in trained for k in t.factors}):
        holders = [t for t in trained if key in t.factors]
        copies = [t.factors[key] for t in holders]
        now = current.get(key)
        r_max = now.rank if now is not None else max(f.rank for f in copies)
        weights = [float(f.delta().norm()) for f in copies]
        total = sum(weights)
        if total == 0:  # nothing moved (B still zero everywhere): plain mean
            weights, total = [1.0] * len(copies), float(len(copies))
        A = torch.zeros(r_max, copies[0].A.shape[1]) if now is None else now.A.clone()
        B = torch.zeros(copies[0].B.shape[0], r_max) if now is None else now.B.clone()
        for t, f, w in zip(holders, copies, weights, strict=True):
            start = t.start_of(key, current, 0)
            start = now if start is None else start
            q = (w / total) * t.coefficient_of(key)
            if start is None:
                A[: f.rank] += q * f.A
                B[:, : f.rank] += q * f.B
            else:
                A[: f.rank] += q * (f.A - start.A[: f.rank])
                B[:, : f.rank] += q * (f.B - start.B[:, : f.rank])
        alpha = now.alpha if now is not None else copies[0].alpha * r_max / copies[0].rank
        out[key] = LoRAFactors(A, B, alpha)
    return out


# -- NAA ----------------------------------------------------------------------------------------------------
def stack(trained: list[Trained]) -> dict:
    """Per matrix, over the participants that trained it: A = concat(p_i c_i s_i A_i), B = concat(B_i), returned
    as factors of scale 1 (alpha = their total rank), so `B @ A = sum_i p_i c_i s_i B_i A_i` with nothing
    dropped; c_i = server_lr * w(staleness) (1 in sync).
    Identical copies (the shared server set, in the trained set of every client split before that block) are
    stacked once with their summed weight: the same sum, and its rank is downloaded and merged once, not once
    per client."""
    import torch

    from hsplit_actors.model.factors import LoRAFactors

    out = {}
    for key, holders, total in _per_matrix(trained):
        A = torch.cat([((w / total) * f.scale * c) * f.A for f, w, c in holders], dim=0)
        B = torch.cat([f.B for f, _, _ in holders], dim=1)
        out[key] = LoRAFactors(A, B, float(A.shape[0]))
    return out


def _per_matrix(trained: list[Trained]):
    """(key, distinct trained copies, their total weight) for every matrix some participant trained."""
    for key in sorted({k for t in trained for k in t.factors}):
        holders = _holders(trained, key)
        if holders:
            yield key, holders, sum(w for _, w, _ in holders)


def _holders(trained: list[Trained], key: Key) -> list:
    """(factors, summed weight, coefficient) of every distinct trained copy of `key` (identical copies once)."""
    import torch

    holders: list = []
    for t in trained:
        f = t.factors.get(key)
        if f is None or f.rank == 0:
            continue
        c = t.coefficient_of(key)
        same = next((i for i, (g, _, gc) in enumerate(holders) if gc == c and g.scale == f.scale
                     and g.A.shape == f.A.shape and torch.equal(g.A, f.A) and torch.equal(g.B, f.B)), None)
        if same is None:
            holders.append((f, t.weight, c))
        else:
            holders[same] = (holders[same][0], holders[same][1] + t.weight, c)
    return holders


def zero_padded_average(trained: list[Trained]) -> dict:
    """The ablation of NAA: per matrix, `A = sum p_i c_i s_i pad(A_i)`, `B = sum p_i pad(B_i)` zero-padded to the
    largest rank, merged as `B A`; unlike stacking, the product of averages carries cross terms `B_i A_j`."""
    import torch

    from hsplit_actors.model.factors import LoRAFactors

    out = {}
    for key, holders, total in _per_matrix(trained):
        r_max = max(f.rank for f, _, _ in holders)
        A = torch.zeros(r_max, holders[0][0].A.shape[1], dtype=holders[0][0].A.dtype)
        B = torch.zeros(holders[0][0].B.shape[0], r_max, dtype=holders[0][0].B.dtype)
        for f, w, c in holders:
            A[:f.rank] += ((w / total) * f.scale * c) * f.A
            B[:, :f.rank] += (w / total) * f.B
        out[key] = LoRAFactors(A, B, float(r_max))
    return out
