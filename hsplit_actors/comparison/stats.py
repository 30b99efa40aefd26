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


def mean_ci(values: pd.Series, level: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of the Student-t interval and the count of finite values (NaN: not reached)."""
    from scipy import stats

    x = values.to_numpy(float)
    x = x[np.isfinite(x)]
    if not len(x):
        return math.nan, math.nan, 0
    if len(x) == 1:
        return float(x[0]), math.nan, 1
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
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
