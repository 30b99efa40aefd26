"""Plots of a run directory's tables, for notebooks (analysis/timeline.ipynb) and scripts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hsplit_actors.engine.session import ALL_PHASES, PHASES

COLOURS = dict(zip(ALL_PHASES, ["#4C72B0", "#DD8452", "#C44E52", "#8172B3", "#937860", "#55A868", "#DA8BC3",
                                "#8C8C8C", "#CCB974", "#000000", "#B0B0B0"], strict=True))


def _axes(ax, figsize=(11, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def gantt(events: pd.DataFrame, clients: pd.DataFrame, n_clients: int = 8, rounds: tuple[int, ...] = (0,), ax=None):
    """Phases of the first `n_clients` clients over virtual time, one row per client."""
    ax = _axes(ax, (11, 0.45 * n_clients + 1.5))
    shown = sorted(events.loc[events["client"] >= 0, "client"].unique())[:n_clients]
    sel = events[events["client"].isin(shown) & events["round"].isin(rounds)]
    device = clients.set_index("client")["device"].astype(str)
    for row, client in enumerate(shown):
        mine = sel[sel["client"] == client]
        for phase, part in mine.groupby(mine["phase"].astype(str)):
            spans = list(zip(part["t_start"], part["t_end"] - part["t_start"], strict=True))
            ax.broken_barh(spans, (row - 0.4, 0.8), color=COLOURS[phase], label=phase)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), ncol=len(unique), fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.18), frameon=False)
    ax.set_yticks(range(len(shown)), [f"{c} {device.get(c, '')}" for c in shown])
    ax.invert_yaxis()
    ax.set_xlabel("virtual time (s)")
    ax.set_title(f"phases of the first {len(shown)} clients, round(s) {', '.join(map(str, rounds))}")
    return ax


def server_load(events: pd.DataFrame, gpus: int, bins: int = 200) -> pd.DataFrame:
    """Queue length (exact, as a step function) and GPU utilisation per time bin."""
    queue = events[events["phase"] == "queue"]
    server = events[events["phase"] == "server"]
    end = float(events["t_end"].max()) if len(events) else 0.0
    edges = np.linspace(0.0, end, bins + 1) if end > 0 else np.array([0.0, 1.0])
    t = np.concatenate([queue["t_start"].to_numpy(), queue["t_end"].to_numpy()])
    step = np.concatenate([np.ones(len(queue)), -np.ones(len(queue))])
    order = np.lexsort((step, t))  # departures before arrivals at equal times
    times, length = t[order], np.cumsum(step[order])
    idx = np.searchsorted(times, edges[:-1], side="right") - 1
    queue_len = np.where(idx >= 0, length[np.clip(idx, 0, None)] if len(length) else 0, 0)
    starts, ends = server["t_start"].to_numpy(), server["t_end"].to_numpy()
    busy = np.zeros(len(edges) - 1)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        overlap = np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0, None).sum()
        busy[i] = overlap / (gpus * (hi - lo))
    return pd.DataFrame({"t": edges[:-1], "queue_len": queue_len, "utilisation": busy})


def server_timeline(events: pd.DataFrame, gpus: int = 1, bins: int = 200, ax=None):
    """Server queue length and GPU utilisation over virtual time, on twin axes."""
    ax = _axes(ax)
    load = server_load(events, gpus, bins)
    ax.step(load["t"], load["queue_len"], where="post", color=COLOURS["queue"], label="queue length")
    ax.set_ylabel("jobs waiting")
    ax.set_xlabel("virtual time (s)")
    from matplotlib.ticker import MaxNLocator

    # whole jobs from 0 up, also when nobody waited (matplotlib would centre an all-zero line on -0.05..0.05)
    ax.set_ylim(0, max(1.0, float(load["queue_len"].max()) if len(load) else 1.0) * 1.05)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    twin = ax.twinx()
    twin.fill_between(load["t"], load["utilisation"] * 100, step="post", alpha=0.3, color=COLOURS["server"],
                      label="GPU utilisation")
    twin.set_ylabel("GPU utilisation (%)")
    twin.set_ylim(0, 105)
    ax.set_title("server queue and utilisation")
    return ax


def phase_breakdown(events: pd.DataFrame, clients: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per iteration spent in each phase, per device type."""
    work = events[events["phase"].isin(PHASES)].copy()
    work["seconds"] = work["t_end"] - work["t_start"]
    work["device"] = work["client"].map(clients.set_index("client")["device"].astype(str))
    per_iter = work.groupby(["device", work["phase"].astype(str), "client", "round", "iteration"])["seconds"].sum()
    table = per_iter.groupby(["device", "phase"]).mean().unstack(fill_value=0.0)
    return table.reindex(columns=[p for p in PHASES if p in table.columns])


def phase_breakdown_plot(events: pd.DataFrame, clients: pd.DataFrame, ax=None):
    """Stacked bars: where an iteration's time goes on each device type."""
    ax = _axes(ax)
    table = phase_breakdown(events, clients)
    table.plot.barh(stacked=True, ax=ax, color=[COLOURS[p] for p in table.columns], width=0.7)
    ax.set_xlabel("seconds per iteration (mean)")
    ax.set_ylabel("")
    ax.set_title("time per phase by device type")
    ax.legend(fontsize=8, ncol=3)
    return ax


def importance_matrix(importance: pd.DataFrame, round_: int | None = None) -> pd.DataFrame:
    """IWI's smoothed score per block (rows) and matrix (columns) after `round_` (default: the last round)."""
    if importance.empty:
        return pd.DataFrame()
    chosen = importance["round"].max() if round_ is None else round_
    last = importance[importance["round"] == chosen]
    return last.pivot(index="block", columns="matrix", values="score")


def importance_heatmap(importance: pd.DataFrame, round_: int | None = None, ax=None):
    """Where HSplitLoRA found importance (score per unit of rank cost): darker is more important."""
    table = importance_matrix(importance, round_)
    ax = _axes(ax, figsize=(6, 4))
    image = ax.imshow(table.to_numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=30)
    ax.set_yticks(range(len(table.index)), [f"block {b + 1}" for b in table.index])
    ax.figure.colorbar(image, ax=ax, label="importance I_m")
    ax.set_title("IWI importance" + ("" if round_ is None else f", round {round_}"))
    return ax


def rank_map(clients: pd.DataFrame) -> pd.DataFrame:
    """Each client's split point and total rank per matrix, from the clients table's `ranks` JSON."""
    import json

    rows = []
    for row in clients.itertuples(index=False):
        if not row.feasible:
            continue
        ranks = json.loads(row.ranks)
        rows.append({"client": row.client, "device": row.device, "split_point": row.split_point,
                     **{m: int(sum(r)) for m, r in ranks.items()}})
    return pd.DataFrame(rows)
