"""What the summary, `compare --plan` and TensorBoard read off the phases (time per phase, the server queue's
waits, when each client finished its round), computed from the simulation log. The figures are therefore the
same whatever events resolution a run writes (`events: phase | iteration | none`); a run directory read back
from disk without them (an older run) has them rebuilt from its phase-resolution events table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hsplit_actors.engine.session import PHASES


@dataclass(frozen=True)
class Timeline:
    phase_s: dict[str, float]  # each iteration phase's duration summed over every client iteration
    iterations: int  # client iterations
    queued: int  # iterations that went through the server queue
    queue_wait_s: float  # their summed wait
    finish: pd.DataFrame  # round, client, finish_s: when its local work ended, from the round's first event

    @property
    def queue_wait_mean_s(self) -> float:
        return self.queue_wait_s / self.queued if self.queued else 0.0

    def meta(self) -> dict:
        """The JSON part (meta.json `phases`): what a comparison reads back."""
        return {"seconds": self.phase_s, "iterations": self.iterations, "queued": self.queued,
                "queue_wait_s": self.queue_wait_s}


def phase_presence(configs) -> np.ndarray:
    """Per configuration, which of the six iteration phases exist: federated (k = L) has no network or server
    phases, centralised (k = 0) no device phases."""
    layers = max((len(c.ranks) for c in configs), default=0)
    k = np.array([c.split_point for c in configs] or [0])
    return np.stack([k > 0, (k > 0) & (k < layers), k < layers, k < layers, (k > 0) & (k < layers), k > 0], 1)


def from_log(log, ints: np.ndarray, it_round: np.ndarray, o_ints: np.ndarray, o_round: np.ndarray) -> Timeline:
    """`ints`, `it_round`, `o_ints`, `o_round`: the log as `tables._log_arrays` reads it (rounds as the events
    table's `round` column has them)."""
    times = np.frombuffer(log.iter_times, dtype=np.float64).reshape(-1, 7)
    o_start = np.frombuffer(log.other_floats, dtype=np.float64).reshape(-1, 3)[:, 0]
    present = phase_presence(log.configs)[ints[:, 3]] if len(ints) else np.zeros((0, 6), dtype=bool)
    spans = np.diff(times, axis=1)
    seconds = {p: float(spans[present[:, j], j].sum()) for j, p in enumerate(PHASES)}
    waits = spans[present[:, 2], 2]
    # a round starts at its first event; a client's local work in it ends with its last iteration
    rounds = np.concatenate([it_round, o_round])
    starts = pd.Series(np.concatenate([times[:, 0], o_start])).groupby(rounds).min()
    ends = pd.DataFrame({"round": it_round, "client": ints[:, 0], "t_end": times[:, 6]})
    finish = ends.groupby(["round", "client"], sort=True)["t_end"].max().reset_index()
    finish["finish_s"] = finish["t_end"] - finish["round"].map(starts).to_numpy()
    return Timeline(seconds, len(ints), int(len(waits)), float(waits.sum()),
                    finish[["round", "client", "finish_s"]])


def from_events(events: pd.DataFrame, phases: dict | None = None) -> Timeline:
    """The same figures from a run read back from disk: from its events table (phase resolution; at iteration
    resolution the finish times only), the phase sums from meta.json's `phases` when it has them. A run written
    with `events: none` has no finish times to read back."""
    work = events[events["phase"].isin([*PHASES, "iteration"]) & (events["client"] >= 0)]
    start = events.groupby("round")["t_start"].min()
    finish = work.groupby(["round", "client"], observed=True)["t_end"].max().reset_index()
    finish["finish_s"] = finish["t_end"] - finish["round"].map(start).to_numpy()
    finish = finish[["round", "client", "finish_s"]]
    if phases is not None:
        return Timeline(phases["seconds"], phases["iterations"], phases["queued"], phases["queue_wait_s"], finish)
    spans = work["t_end"] - work["t_start"]
    by_phase = spans.groupby(work["phase"].astype(str)).sum()
    queue = spans[work["phase"] == "queue"]
    iterations = max(int((work["phase"] == "client_fwd").sum()), len(queue))  # a centralised step has no forward
    return Timeline({p: float(by_phase.get(p, 0.0)) for p in PHASES}, iterations, int(len(queue)),
                    float(queue.sum()), finish)


def stragglers(finish: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Per round and client: finish time, the round's median, and whether it finished after `factor` x it."""
    out = finish.copy()
    out["median_s"] = out.groupby("round")["finish_s"].transform("median")
    out["straggler"] = out["finish_s"] > factor * out["median_s"]
    return out
