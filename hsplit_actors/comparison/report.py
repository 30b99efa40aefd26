"""What a person reads of a comparison: Markdown tables (mean ± 95% CI) and plots (mean curves with bands)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hsplit_actors.comparison.stats import mean_ci


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "-"
        return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return str(value)


def to_markdown(table: pd.DataFrame, columns: list[str]) -> str:
    """One row per variant, columns named as in comparison.csv; a column with a `<col>_ci` partner shows
    `mean ± half-width` (one seed: the value)."""
    header = ["variant", "method", "seeds", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row["variant"]), str(row["method"]), str(row["seeds"])]
        for column in columns:
            value, half = row[column], row.get(f"{column}_ci", math.nan)
            if column == "time_to_target_s" and isinstance(value, float) and math.isnan(value):
                cells.append("not reached")
            elif isinstance(half, float) and not math.isnan(half):
                cells.append(f"{_fmt(value)} ± {_fmt(half)}")
            else:
                cells.append(_fmt(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def curves_on_grid(curves: list[tuple[np.ndarray, np.ndarray]], points: int = 200):
    """Seeds' step curves (each evaluation holds until the next) on a common grid up to the shortest run:
    the grid, the mean and the 95% CI half-width at each point."""
    horizon = min(t[-1] for t, _ in curves)
    start = max(t[0] for t, _ in curves)
    grid = np.linspace(start, horizon, points) if horizon > start else np.array([horizon])
    stacked = np.stack([v[np.searchsorted(t, grid, side="right") - 1] for t, v in curves])
    stats = [mean_ci(pd.Series(column)) for column in stacked.T]
    return grid, np.array([s[0] for s in stats]), np.nan_to_num(np.array([s[1] for s in stats]))


def plot_curves(curves: dict[str, list[tuple[np.ndarray, np.ndarray]]], metric: str, path: Path,
                target: float | None = None) -> Path:
    """The metric against virtual time: per variant the mean over seeds, shaded by its 95% CI."""
    import matplotlib.pyplot as plt

    fig, _ = curves_figure(curves, metric, target)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curves_figure(curves: dict[str, list[tuple[np.ndarray, np.ndarray]]], metric: str, target: float | None = None):
    """plot_curves' figure and axes (tests read its ticks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, SymmetricalLogLocator

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for variant, runs in curves.items():
        runs = [(t, v) for t, v in runs if len(t)]
        if not runs:
            continue
        grid, mean, half = curves_on_grid(runs)
        (line,) = ax.plot(grid, mean, label=f"{variant} (n={len(runs)})")
        ax.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.2, linewidth=0)
    if target is not None and np.isfinite(target):
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.3g}")
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel(metric)
    low, high = ax.get_xlim()
    if high > 1000 * max(low, 1e-9) and high > 100:  # spans decades: what happens early stays readable
        ax.set_xscale("symlog", linthresh=1.0)
        ax.xaxis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=1.0, subs=[1.0, 2.0, 5.0]))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8))
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, ax


def plot_round_time(table: pd.DataFrame, phases: list[str], path: Path) -> Path:
    """Timing-only comparison: a variant's mean client-iteration time, stacked by phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(table) + 2))
    left = np.zeros(len(table))
    for phase in phases:
        values = table[f"{phase}_s"].to_numpy(float)
        ax.barh(table["variant"], values, left=left, label=phase)
        left += values
    ax.set_xlabel("seconds per client iteration (mean over clients and seeds)")
    ax.invert_yaxis()
    ax.legend(fontsize=8, ncols=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
