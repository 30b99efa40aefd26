"""The run's pandas tables (SPEC §7), built vectorised from the simulation log."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from hsplit_actors.costmodel import ModelArch
from hsplit_actors.engine.session import ALL_PHASES
from hsplit_actors.engine.sim import SimulationLog
from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.base import GIB

EVENT_COLUMNS = ["run", "method", "round", "version", "client", "iteration", "phase", "t_start", "t_end", "bytes",
                 "flops", "queue_len", "batch"]


def _log_arrays(log: SimulationLog):
    """The log as arrays, with each iteration's and each other event's round resolved from its session (sync and
    semi_sync: the round it was drawn for; async: the aggregation that took its update, -1 if none did)."""
    ints = np.frombuffer(log.iter_ints, dtype=np.int64).reshape(-1, 7)  # client, session, it, config, queue, v, batch
    o_ints = np.frombuffer(log.other_ints, dtype=np.int64).reshape(-1, 6)  # client, session, round, phase, bytes, v
    session_round = np.frombuffer(log.session_round, dtype=np.int64)
    it_round = session_round[ints[:, 1]] if len(session_round) else np.zeros(len(ints), dtype=np.int64)
    o_round = o_ints[:, 2].copy()
    own = o_ints[:, 1] >= 0
    o_round[own] = session_round[o_ints[own, 1]]
    return ints, it_round, o_ints, o_round


def events_table(log: SimulationLog, run: str, method: str) -> pd.DataFrame:
    """One row per phase of every client iteration, plus aggregation transfers, the aggregation and dropouts.

    Rows are in virtual-time order (ties keep the log's deterministic order). Each column is gathered once from
    the log through a composite index: at millions of rows, copies are what costs.
    """
    ints, it_round, o_ints, o_round = _log_arrays(log)
    times = np.frombuffer(log.iter_times, dtype=np.float64).reshape(-1, 7)  # boundaries of the six phases
    o_floats = np.frombuffer(log.other_floats, dtype=np.float64).reshape(-1, 3)  # t_start, t_end, flops
    costs, configs = log.costs, log.configs
    cfg_bytes = np.array([[0, c.uplink_bytes, 0, 0, c.downlink_bytes, 0] for c in costs] or [[0] * 6], dtype=np.int64)
    cfg_flops = np.array([[c.client_fwd_flops, 0, 0, c.server_flops, 0, c.client_bwd_flops] for c in costs]
                         or [[0.0] * 6])
    # Which phases exist per configuration: federated (k = L) has no network/server phases, centralised (k = 0)
    # no device phases.
    layers = max((len(c.ranks) for c in configs), default=0)
    k = np.array([c.split_point for c in configs] or [0])
    cfg_present = np.stack([k > 0, (k > 0) & (k < layers), k < layers, k < layers, (k > 0) & (k < layers), k > 0], 1)
    sel = np.flatnonzero(cfg_present[ints[:, 3]].ravel()) if len(ints) else np.zeros(0, dtype=np.int64)
    row, phase = np.divmod(sel, 6)
    n_iter = len(sel)
    t_start_all = np.concatenate([times.ravel()[row * 7 + phase], o_floats[:, 0]])
    order = np.argsort(t_start_all, kind="stable")
    from_iter = order < n_iter
    it_rows, it_phase = row[order[from_iter]], phase[order[from_iter]]
    other = order[~from_iter] - n_iter

    def column(iter_values: np.ndarray, other_values: np.ndarray, dtype) -> np.ndarray:
        out = np.empty(len(order), dtype=dtype)
        out[from_iter] = iter_values
        out[~from_iter] = other_values[other]
        return out

    cfg = ints[it_rows, 3]
    frame = pd.DataFrame({
        "round": column(it_round[it_rows], o_round, np.int32),
        "version": column(ints[it_rows, 5], o_ints[:, 5], np.int32),
        "client": column(ints[it_rows, 0], o_ints[:, 0], np.int32),
        "iteration": column(ints[it_rows, 2], np.full(len(o_ints), -1), np.int32),
        "t_start": t_start_all[order],
        "t_end": column(times[it_rows, it_phase + 1], o_floats[:, 1], np.float64),
        "bytes": column(cfg_bytes[cfg, it_phase], o_ints[:, 4], np.int64),
        "flops": column(cfg_flops[cfg, it_phase], o_floats[:, 2], np.float64),
        "queue_len": column(np.where(it_phase == 2, ints[it_rows, 4], 0), np.zeros(len(o_ints)), np.int32),
        # jobs in the server batch this iteration ran in (1 unbatched); 0 on every other row
        "batch": column(np.where(it_phase == 3, ints[it_rows, 6], 0), np.zeros(len(o_ints)), np.int32),
    })
    codes = column(it_phase, o_ints[:, 3], np.int8)
    constant = np.zeros(len(frame), dtype=np.int8)
    frame["phase"] = pd.Categorical.from_codes(codes, categories=list(ALL_PHASES))
    frame["run"] = pd.Categorical.from_codes(constant, categories=[run])
    frame["method"] = pd.Categorical.from_codes(constant, categories=[method])
    return frame[EVENT_COLUMNS]


def _per_row(rows: np.ndarray, weights: np.ndarray | None, n_rows: int) -> np.ndarray:
    ok = (rows >= 0) & (rows < n_rows)
    return np.bincount(rows[ok], weights=None if weights is None else weights[ok], minlength=n_rows)[:n_rows] \
        .astype(np.int64)


def rounds_table(log: SimulationLog) -> pd.DataFrame:
    """One row per round (async: per aggregation): virtual times, the version it ended with, its updates and
    their staleness, metrics (NaN when nothing was trained or evaluated), traffic. In async, traffic and dropouts
    count in the row during which they happened."""
    rounds = pd.DataFrame(log.rounds)
    for metric in ("train_loss", "eval_loss", "eval_metric"):
        if metric not in rounds:
            rounds[metric] = np.nan
    n = len(rounds)
    ints, it_round, o_ints, o_round = _log_arrays(log)
    times = np.frombuffer(log.iter_times, dtype=np.float64).reshape(-1, 7)
    o_floats = np.frombuffer(log.other_floats, dtype=np.float64).reshape(-1, 3)
    if log.by_time and n:
        ends = rounds["t_end"].to_numpy()
        it_round = np.searchsorted(ends, times[:, 6], side="left")
        o_round = np.searchsorted(ends, o_floats[:, 1], side="left")
    cfg_up = np.array([c.uplink_bytes for c in log.costs] or [0], dtype=float)
    cfg_down = np.array([c.downlink_bytes for c in log.costs] or [0], dtype=float)
    o_phase, o_bytes = o_ints[:, 3], o_ints[:, 4].astype(float)
    agg_up, agg_down = o_phase == ALL_PHASES.index("agg_up"), o_phase == ALL_PHASES.index("agg_down")
    rounds["bytes_up"] = _per_row(it_round, cfg_up[ints[:, 3]], n) + _per_row(o_round[agg_up], o_bytes[agg_up], n)
    rounds["bytes_down"] = (_per_row(it_round, cfg_down[ints[:, 3]], n)
                            + _per_row(o_round[agg_down], o_bytes[agg_down], n))
    rounds["dropouts"] = _per_row(o_round[o_phase == ALL_PHASES.index("dropout")], None, n)
    rounds["discarded"] = _per_row(o_round[o_phase == ALL_PHASES.index("discarded")], None, n)
    rounds["round_s"] = rounds["t_end"] - rounds["t_start"]
    return rounds


def clients_table(log: SimulationLog, fleet: Fleet, arch: ModelArch, n_samples: np.ndarray) -> pd.DataFrame:
    """One row per device: budgets, its (last) configuration, trainable parameters, memory, feasibility."""
    feasible = log.client_config >= 0
    index = np.where(feasible, log.client_config, len(log.configs))  # infeasible clients read the sentinel

    def per_config(values: list, empty) -> np.ndarray:
        return np.array([*values, empty], dtype=object if isinstance(empty, str) else None)[index]

    costs, configs = log.costs, log.configs
    table = pd.DataFrame({
        "client": np.arange(len(fleet), dtype=np.int32),
        "device": pd.Categorical(fleet.device),
        "memory_gb": fleet.memory_gb, "flops": fleet.flops, "uplink_mbps": fleet.uplink_mbps,
        "downlink_mbps": fleet.downlink_mbps, "latency_ms": fleet.latency_ms, "mem_gbps": fleet.mem_gbps,
        "launch_us": fleet.launch_us,
        "participation": fleet.participation, "n_samples": n_samples,
        "split_point": per_config([c.split_point for c in configs], -1).astype(np.int64),
        "ranks": per_config([json.dumps(c.pattern(arch)) for c in configs], ""),
        "trainable_params": per_config([c.adapter_params for c in costs], 0).astype(np.int64),
        "server_trainable_params": per_config([c.server_adapter_params for c in costs], 0).astype(np.int64),
        # an infeasible device: what the run's cheapest configuration needs (more than its memory_gb)
        "memory_estimate_gb": per_config([c.client_memory_bytes / GIB for c in costs],
                                         min((c.client_memory_bytes for c in costs), default=0) / GIB).astype(float),
        "feasible": feasible,
    })
    ints = np.frombuffer(log.iter_ints, dtype=np.int64).reshape(-1, 7)
    clients = len(fleet)
    table["iterations_done"] = np.bincount(ints[:, 0], minlength=clients)
    sessions = np.unique(ints[:, 1])  # sessions with at least one iteration (async: there are no rounds)
    owner = np.zeros(0, dtype=np.int64)
    if len(sessions):
        first = np.unique(ints[:, 1], return_index=True)[1]
        owner = ints[first, 0]
    table["rounds_participated"] = np.bincount(owner, minlength=clients)
    return table
