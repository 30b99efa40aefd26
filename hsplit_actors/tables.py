"""The run's pandas tables (SPEC §7), built vectorised from the simulation log."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from hsplit_actors.costmodel import ModelArch
from hsplit_actors.engine.sim import ALL_PHASES, SimulationLog
from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.base import GIB

EVENT_COLUMNS = ["run", "method", "round", "client", "iteration", "phase", "t_start", "t_end", "bytes", "flops",
                 "queue_len"]


def events_table(log: SimulationLog, run: str, method: str) -> pd.DataFrame:
    """One row per phase of every client iteration, plus aggregation transfers, the aggregation and dropouts."""
    ints = np.frombuffer(log.iter_ints, dtype=np.int64).reshape(-1, 5)
    times = np.frombuffer(log.iter_times, dtype=np.float64).reshape(-1, 7)
    n = len(ints)
    cfg = ints[:, 3]
    costs = log.costs
    per_cfg_bytes = np.array([[0, c.uplink_bytes, 0, 0, c.downlink_bytes, 0] for c in costs] or [[0] * 6],
                             dtype=np.int64)
    per_cfg_flops = np.array([[c.client_fwd_flops, 0, 0, c.server_flops, 0, c.client_bwd_flops] for c in costs]
                             or [[0.0] * 6])
    split = np.array([cf.split_point for cf in log.configs] or [0])
    layers = max((len(cf.ranks) for cf in log.configs), default=0)
    k = split[cfg] if n else np.zeros(0, dtype=np.int64)
    # Which phases exist: federated (k = L) has no network/server phases, centralised (k = 0) no device phases.
    present = np.ones((n, 6), dtype=bool)
    present[:, [0, 5]] = (k > 0)[:, None]
    present[:, [1, 4]] = ((k > 0) & (k < layers))[:, None]
    present[:, [2, 3]] = (k < layers)[:, None]
    mask = present.ravel()
    queue_len = np.zeros((n, 6), dtype=np.int64)
    queue_len[:, 2] = ints[:, 4]
    iter_part = {
        "round": np.repeat(ints[:, 1], 6)[mask],
        "client": np.repeat(ints[:, 0], 6)[mask],
        "iteration": np.repeat(ints[:, 2], 6)[mask],
        "phase": np.tile(np.arange(6), n)[mask],
        "t_start": times[:, :6].ravel()[mask],
        "t_end": times[:, 1:].ravel()[mask],
        "bytes": per_cfg_bytes[cfg].ravel()[mask],
        "flops": per_cfg_flops[cfg].ravel()[mask],
        "queue_len": queue_len.ravel()[mask],
    }
    o_ints = np.frombuffer(log.other_ints, dtype=np.int64).reshape(-1, 4)
    o_floats = np.frombuffer(log.other_floats, dtype=np.float64).reshape(-1, 3)
    other_part = {
        "round": o_ints[:, 1], "client": o_ints[:, 0], "iteration": np.full(len(o_ints), -1),
        "phase": o_ints[:, 2], "t_start": o_floats[:, 0], "t_end": o_floats[:, 1], "bytes": o_ints[:, 3],
        "flops": o_floats[:, 2], "queue_len": np.zeros(len(o_ints), dtype=np.int64),
    }
    cols = {key: np.concatenate([iter_part[key], other_part[key]]) for key in iter_part}
    order = np.lexsort((cols["phase"], cols["client"], cols["t_start"]))
    frame = pd.DataFrame({key: value[order] for key, value in cols.items()})
    frame["round"] = frame["round"].astype(np.int32)
    frame["client"] = frame["client"].astype(np.int32)
    frame["iteration"] = frame["iteration"].astype(np.int32)
    frame["queue_len"] = frame["queue_len"].astype(np.int32)
    frame["phase"] = pd.Categorical.from_codes(frame["phase"].to_numpy(), categories=list(ALL_PHASES))
    frame.insert(0, "method", pd.Categorical([method] * len(frame)) if len(frame) else pd.Categorical([]))
    frame.insert(0, "run", pd.Categorical([run] * len(frame)) if len(frame) else pd.Categorical([]))
    return frame[EVENT_COLUMNS]


def rounds_table(log: SimulationLog, events: pd.DataFrame) -> pd.DataFrame:
    """One row per round: virtual end time, wall time, metrics (NaN when nothing was trained), traffic."""
    rounds = pd.DataFrame(log.rounds)
    for metric in ("train_loss", "eval_loss", "eval_metric"):
        if metric not in rounds:
            rounds[metric] = np.nan
    phase = events["phase"].astype(str)
    up = events[phase.isin(["uplink", "agg_up"])].groupby("round")["bytes"].sum()
    down = events[phase.isin(["downlink", "agg_down"])].groupby("round")["bytes"].sum()
    drops = events[phase == "dropout"].groupby("round").size()
    rounds["bytes_up"] = rounds["round"].map(up).fillna(0).astype(np.int64)
    rounds["bytes_down"] = rounds["round"].map(down).fillna(0).astype(np.int64)
    rounds["dropouts"] = rounds["round"].map(drops).fillna(0).astype(np.int64)
    rounds["round_s"] = rounds["t_end"] - rounds["t_start"]
    return rounds


def clients_table(log: SimulationLog, fleet: Fleet, arch: ModelArch, events: pd.DataFrame,
                  n_samples: np.ndarray) -> pd.DataFrame:
    """One row per device: budgets, its (last) configuration, trainable parameters, memory, feasibility."""
    cfg = log.client_config
    feasible = cfg >= 0
    safe = np.where(feasible, cfg, 0)

    def per_config(values: list, empty) -> np.ndarray:
        arr = np.array(values if values else [empty], dtype=object if isinstance(empty, str) else None)
        out = arr[safe]
        return np.where(feasible, out, empty) if not isinstance(empty, str) else np.where(feasible, out, "")

    costs, configs = log.costs, log.configs
    table = pd.DataFrame({
        "client": np.arange(len(fleet), dtype=np.int32),
        "device": pd.Categorical(fleet.device),
        "memory_gb": fleet.memory_gb, "flops": fleet.flops, "uplink_mbps": fleet.uplink_mbps,
        "downlink_mbps": fleet.downlink_mbps, "latency_ms": fleet.latency_ms,
        "participation": fleet.participation, "n_samples": n_samples,
        "split_point": per_config([c.split_point for c in configs], -1).astype(np.int64),
        "ranks": per_config([json.dumps(c.pattern(arch)) for c in configs], ""),
        "trainable_params": per_config([c.adapter_params for c in costs], 0).astype(np.int64),
        "server_trainable_params": per_config([c.server_adapter_params for c in costs], 0).astype(np.int64),
        "memory_estimate_gb": per_config([c.client_memory_bytes / GIB for c in costs], 0.0).astype(float),
        "feasible": feasible,
    })
    phase = events["phase"].astype(str)
    bwd_end = events[phase.isin(["client_bwd", "server"])]
    done = bwd_end.drop_duplicates(["client", "round", "iteration"]).groupby("client").size()
    table["iterations_done"] = table["client"].map(done).fillna(0).astype(np.int64)
    rounds_in = events[events["client"] >= 0].groupby("client")["round"].nunique()
    table["rounds_participated"] = table["client"].map(rounds_in).fillna(0).astype(np.int64)
    return table
