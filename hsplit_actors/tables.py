"""The run's pandas tables (SPEC §7), built vectorised from the simulation log."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pandas as pd

from hsplit_actors.costmodel import ModelArch
from hsplit_actors.engine.schedules.base import ROUND_COLUMNS
from hsplit_actors.engine.session import ALL_PHASES
from hsplit_actors.engine.sim import SimulationLog
from hsplit_actors.fleet import Fleet
from hsplit_actors.methods.base import GIB
from hsplit_actors.timeline import phase_presence

EVENT_COLUMNS = ["run", "method", "round", "version", "client", "iteration", "phase", "t_start", "t_end", "bytes",
                 "flops", "queue_len", "batch"]


def log_arrays(log: SimulationLog):
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


ITERATION = "iteration"  # the phase label of a whole-iteration row (`events: iteration`)
CATEGORIES = [*ALL_PHASES, ITERATION]
ROW_GROUP = 4_000_000  # rows built and written at a time


class EventRows:
    """The events table at a resolution, in virtual-time order (ties keep the log's deterministic order), built
    a row group at a time: `write_run` streams the groups to Parquet, so a million-client plan never holds the
    table whole; `frame()` builds all of it (what a caller who asks for `tables.events` gets).

    `phase`: one row per phase of every client iteration, plus aggregation transfers, the aggregation and
    dropouts. `iteration`: one row per client iteration (phase `iteration`, t_start..t_end, its activation bytes
    and flops summed, queue_len and batch as on its queue and server rows) plus the same other rows. `none`: no
    rows; the rounds and clients tables, and the summary's figures (`timeline.py`), are the same at all three.
    """

    def __init__(self, log: SimulationLog, run: str, method: str, resolution: str = "phase",
                 group_rows: int | None = None):
        self.log, self.run, self.method, self.resolution = log, run, method, resolution
        self.group_rows = group_rows or ROW_GROUP
        ints = np.frombuffer(log.iter_ints, dtype=np.int64).reshape(-1, 7)
        self.n_other = len(log.other_ints) // 6 if resolution != "none" else 0
        if resolution == "phase":
            present = phase_presence(log.configs)[ints[:, 3]] if len(ints) else np.zeros((0, 6), dtype=bool)
            self.n_iter = int(present.sum())
        else:
            self.n_iter = len(ints) if resolution == ITERATION else 0

    def __len__(self) -> int:
        return self.n_iter + self.n_other

    def frame(self) -> pd.DataFrame:
        chunks = list(self.chunks())
        return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)

    def chunks(self) -> Iterator[pd.DataFrame]:
        """The table in row groups of `group_rows` (one, empty, when there are no rows)."""
        if not len(self):
            yield self._frame(*(np.zeros(0, dtype=d) for d in (np.int32, np.int32, np.int32, np.int32, np.float64,
                                                              np.float64, np.int64, np.float64, np.int32, np.int32,
                                                              np.int8)))
            return
        log = self.log
        ints, it_round, o_ints, o_round = log_arrays(log)
        times = np.frombuffer(log.iter_times, dtype=np.float64).reshape(-1, 7)
        o_floats = np.frombuffer(log.other_floats, dtype=np.float64).reshape(-1, 3)  # t_start, t_end, flops
        costs = log.costs
        cfg_bytes = np.array([[0, c.uplink_bytes, 0, 0, c.downlink_bytes, 0] for c in costs] or [[0] * 6],
                             dtype=np.int64)
        cfg_flops = np.array([[c.client_fwd_flops, 0, 0, c.server_flops, 0, c.client_bwd_flops] for c in costs]
                             or [[0.0] * 6])
        present = phase_presence(log.configs)
        if self.resolution == "phase":
            sel = np.flatnonzero(present[ints[:, 3]].ravel()) if len(ints) else np.zeros(0, dtype=np.int64)
            row, phase = np.divmod(sel, 6)
            del sel
            row, phase = row.astype(np.int64), phase.astype(np.int8)
            start = times.ravel()[row * 7 + phase]
        else:  # one row per iteration: phase boundaries 0 and 6, the present phases' bytes and flops summed
            row, phase = np.arange(len(ints), dtype=np.int64), np.full(len(ints), CATEGORIES.index(ITERATION),
                                                                        dtype=np.int8)
            start = times[:, 0]
            cfg_bytes = np.c_[(cfg_bytes * present).sum(axis=1)]
            cfg_flops = np.c_[(cfg_flops * present).sum(axis=1)]
        n_iter = len(row)
        order = np.argsort(np.concatenate([start, o_floats[:, 0]]), kind="stable")
        del start
        per_row = self.resolution == "phase"
        for lo in range(0, len(order), self.group_rows):
            sub = order[lo:lo + self.group_rows]
            from_iter = sub < n_iter
            rows, other = row[sub[from_iter]], sub[~from_iter] - n_iter
            code = phase[sub[from_iter]]
            col = code if per_row else np.zeros(len(rows), dtype=np.int8)  # which column of the per-config figures
            t_end = times[rows, code + 1] if per_row else times[rows, 6]
            queue = ints[rows, 4] if not per_row else np.where(code == 2, ints[rows, 4], 0)
            batch = ints[rows, 6] if not per_row else np.where(code == 3, ints[rows, 6], 0)
            cfg = ints[rows, 3]

            def column(iter_values: np.ndarray, other_values: np.ndarray, dtype, mask=from_iter,
                       picked=other) -> np.ndarray:
                out = np.empty(len(mask), dtype=dtype)
                out[mask] = iter_values
                out[~mask] = other_values[picked]
                return out

            zeros = np.zeros(len(o_ints))
            yield self._frame(
                column(it_round[rows], o_round, np.int32), column(ints[rows, 5], o_ints[:, 5], np.int32),
                column(ints[rows, 0], o_ints[:, 0], np.int32), column(ints[rows, 2], np.full(len(o_ints), -1),
                                                                       np.int32),
                column(times[rows, 0] if not per_row else times.ravel()[rows * 7 + code], o_floats[:, 0],
                       np.float64),
                column(t_end, o_floats[:, 1], np.float64), column(cfg_bytes[cfg, col], o_ints[:, 4], np.int64),
                column(cfg_flops[cfg, col], o_floats[:, 2], np.float64), column(queue, zeros, np.int32),
                column(batch, zeros, np.int32), column(code, o_ints[:, 3], np.int8))

    def _frame(self, rnd, version, client, iteration, t_start, t_end, nbytes, flops, queue, batch,
               codes) -> pd.DataFrame:
        frame = pd.DataFrame({"round": rnd, "version": version, "client": client, "iteration": iteration,
                              "t_start": t_start, "t_end": t_end, "bytes": nbytes, "flops": flops,
                              "queue_len": queue,
                              # jobs in the server batch the iteration ran in (1 unbatched); 0 on other rows
                              "batch": batch})
        constant = np.zeros(len(frame), dtype=np.int8)
        frame["phase"] = pd.Categorical.from_codes(codes, categories=CATEGORIES)
        frame["run"] = pd.Categorical.from_codes(constant, categories=[self.run])
        frame["method"] = pd.Categorical.from_codes(constant, categories=[self.method])
        return frame[EVENT_COLUMNS]


def _per_row(rows: np.ndarray, weights: np.ndarray | None, n_rows: int) -> np.ndarray:
    ok = (rows >= 0) & (rows < n_rows)
    return np.bincount(rows[ok], weights=None if weights is None else weights[ok], minlength=n_rows)[:n_rows] \
        .astype(np.int64)


def rounds_table(log: SimulationLog) -> pd.DataFrame:
    """One row per round (async: per aggregation): virtual times, the version it ended with, its updates and
    their staleness, metrics (NaN when nothing was trained or evaluated), traffic. In async, traffic and dropouts
    count in the row during which they happened."""
    rounds = (pd.DataFrame(log.rounds) if log.rounds
              else pd.DataFrame({k: pd.Series(dtype=t) for k, t in ROUND_COLUMNS.items()}))
    for metric in ("train_loss", "eval_loss", "eval_metric"):
        if metric not in rounds:
            rounds[metric] = np.nan
    n = len(rounds)
    ints, it_round, o_ints, o_round = log_arrays(log)
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
    # the mean wait in the server queue of the row's iterations (0 when none queued)
    queued = phase_presence(log.configs)[ints[:, 3], 2] if len(ints) else np.zeros(0, dtype=bool)
    in_row = queued & (it_round >= 0) & (it_round < n)
    waits = np.bincount(it_round[in_row], weights=(times[:, 3] - times[:, 2])[in_row], minlength=n)[:n]
    count = np.bincount(it_round[in_row], minlength=n)[:n]
    rounds["queue_wait_s"] = np.divide(waits, count, out=np.zeros(n), where=count > 0)
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
