"""The figures of a comparison: per run (final, best, a target that holds, first touch, area under the curve,
traffic, parameters), and per variant over seeds (mean and a Student-t 95% confidence interval)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hsplit_actors.runs import RunTables

PER_RUN = ["final_metric", "best_metric", "time_to_target_s", "first_touch_s", "rounds_to_target", "auc_metric",
           "virtual_time_s", "round_s_mean", "bytes_moved", "client_trainable_params", "server_trainable_params",
           "participants", "wall_s"]


def _meets(values: np.ndarray, target: float, higher: bool) -> np.ndarray:
    return values >= target if higher else values <= target


def held_from(values: np.ndarray, target: float, higher: bool, hold: int) -> int | None:
    """The first evaluation from which the metric stays at the target for `hold` evaluations in a row; None if
    never (a run whose last evaluations meet it fewer than `hold` times has not shown that it holds)."""
    ok = _meets(values, target, higher)
    for i in range(len(ok) - hold + 1):
        if ok[i:i + hold].all():
            return i
    return None


def area_under(times: np.ndarray, values: np.ndarray, horizon: float) -> float:
    """The metric averaged over virtual time [0, horizon]: each evaluation holds until the next, and before a
    run's first evaluation its first value counts (no run is evaluated before it trains)."""
    if not len(values) or horizon <= 0:
        return math.nan
    edges = np.concatenate([[0.0], np.minimum(times[1:], horizon), [horizon]])
    widths = np.clip(np.diff(edges), 0.0, None)
    return float((values * widths).sum() / horizon)


def run_figures(tables: RunTables, meta: dict, target: float | None, hold: int, horizon: float) -> dict:
    """One run's row; `target` may be None (then no time-to-target), `horizon` the AUC's common time span."""
    rounds, clients = tables.rounds, tables.clients
    higher = meta.get("metric", "accuracy") != "perplexity"
    evaluated = rounds.dropna(subset=["eval_metric"]) if "eval_metric" in rounds else rounds.iloc[:0]
    values, times = evaluated["eval_metric"].to_numpy(float), evaluated["t_end"].to_numpy(float)
    held = held_from(values, target, higher, hold) if target is not None and len(values) else None
    touched = np.flatnonzero(_meets(values, target, higher)) if target is not None else np.array([], int)
    taking_part = clients[clients["feasible"]]
    return {
        "final_metric": float(values[-1]) if len(values) else math.nan,
        "best_metric": float(values.max() if higher else values.min()) if len(values) else math.nan,
        "time_to_target_s": float(times[held]) if held is not None else math.nan,
        "first_touch_s": float(times[touched[0]]) if len(touched) else math.nan,
        "rounds_to_target": int(evaluated["round"].iloc[held]) + 1 if held is not None else math.nan,
        "auc_metric": area_under(times, values, horizon),
        "virtual_time_s": float(rounds["t_end"].iloc[-1]) if len(rounds) else 0.0,
        "round_s_mean": float(rounds["round_s"].mean()) if len(rounds) else 0.0,
        "bytes_moved": int((rounds["bytes_up"] + rounds["bytes_down"]).sum()),
        "client_trainable_params": float(taking_part["trainable_params"].mean()) if len(taking_part) else 0.0,
        "server_trainable_params": float(taking_part["server_trainable_params"].mean()) if len(taking_part) else 0.0,
        "participants": int(clients["feasible"].sum()),
        "wall_s": float(meta.get("wall_s", math.nan)),
    }


def default_target(bests: pd.Series, higher: bool) -> float | None:
    """The best metric every run reached (so each time-to-target is defined where the target is held)."""
    finite = bests[np.isfinite(bests)]
    if not len(finite):
        return None
    return float(finite.min() if higher else finite.max())


def _incomplete_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (modified Lentz), taken on
    the side where it converges fast."""
    if x <= 0.0 or x >= 1.0:
        return min(max(x, 0.0), 1.0)
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _incomplete_beta(1.0 - x, b, a)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return front * fraction / a


def _bisect(increasing, target: float) -> float:
    """The u in [0, 1/2] where the increasing function reaches `target`, to the last float."""
    low, high = 0.0, 0.5
    while True:
        mid = (low + high) / 2
        if mid in (low, high):
            return mid
        low, high = (mid, high) if increasing(mid) < target else (low, mid)


def student_t_quantile(p: float, df: float) -> float:
    """The `p` quantile of Student's t with `df` degrees of freedom (within 1e-9 of scipy's, df up to 1e5).
    With y = t^2 / (df + t^2) and x = 1 - y, P(0 < T < t) = I_y(1/2, df/2) / 2 and P(T > t) = I_x(df/2, 1/2) / 2;
    each is solved where its variable is at most 1/2, so that y or x, and t from it, keep every digit. Written
    here rather than taken from scipy: with scipy installed, transformers imports its optimiser (for
    object-detection losses) in every actor, on start-up's critical path."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"p must lie in (0, 1) and df be positive, not p={p}, df={df}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    a = df / 2
    if p - 0.5 <= _incomplete_beta(0.5, 0.5, a) / 2:  # |t| <= sqrt(df)
        y = _bisect(lambda u: _incomplete_beta(u, 0.5, a), 2 * (p - 0.5))
        return math.sqrt(df * y / (1.0 - y))
    x = _bisect(lambda u: _incomplete_beta(u, a, 0.5), 2 * (1.0 - p))
    return math.sqrt(df * (1.0 - x) / x)


def mean_ci(values: pd.Series, level: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of the Student-t interval and the count of finite values (NaN: not reached)."""
    x = values.to_numpy(float)
    x = x[np.isfinite(x)]
    if not len(x):
        return math.nan, math.nan, 0
    if len(x) == 1:
        return float(x[0]), math.nan, 1
    half = student_t_quantile(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half), len(x)


def per_variant(per_seed: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean and 95% CI over seeds per variant: `<col>`, `<col>_ci` (half-width); time-to-target also counts the
    seeds that reached it (`reached`: k/n)."""
    rows = []
    for variant, group in per_seed.groupby("variant", sort=False):
        row: dict = {"variant": variant, "method": group["method"].iloc[0], "seeds": len(group)}
        for column in columns:
            mean, half, n = mean_ci(group[column])
            row[column], row[f"{column}_ci"] = mean, half
            if column == "time_to_target_s":
                row["reached"] = f"{n}/{len(group)}"
        rows.append(row)
    return pd.DataFrame(rows)
