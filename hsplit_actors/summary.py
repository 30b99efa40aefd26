"""What a person wants to see when a run ends: round time, where the time goes, the server, the stragglers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hsplit_actors import timeline
from hsplit_actors.engine.session import PHASES
from hsplit_actors.runs import RunTables

STRAGGLER_FACTOR = 1.5  # a client is a straggler in a round when it finishes later than 1.5x the median


def stragglers(run: RunTables | pd.DataFrame) -> pd.DataFrame:
    """Per round and client: finish time, the round's median, and whether it straggled (from a run's tables, or
    from an events table)."""
    line = timeline.from_events(run) if isinstance(run, pd.DataFrame) else _timeline(run, {})
    return timeline.stragglers(line.finish, STRAGGLER_FACTOR)


def _timeline(tables: RunTables, meta: dict) -> timeline.Timeline:
    """The simulation's own figures, or, for a run read back from disk, its meta.json's and its events'."""
    return tables.timeline or timeline.from_events(tables.events, meta.get("phases"))


def summarise(tables: RunTables, meta: dict) -> dict:
    """The figures the CLI prints, as a dict (tests and notebooks use it too)."""
    rounds, clients, line = tables.rounds, tables.clients, _timeline(tables, meta)
    # the run's virtual end: past the last aggregation where async ran on to `until_s` (older runs: the rounds')
    makespan = max(float(rounds["t_end"].max()) if len(rounds) else 0.0, float(meta.get("virtual_end_s", 0.0)))
    total = sum(line.phase_s.values())
    share = {p: line.phase_s[p] / total if total else 0.0 for p in PHASES}
    strag = timeline.stragglers(line.finish, STRAGGLER_FACTOR)
    late = strag[strag["straggler"]]
    late_devices = clients.set_index("client").loc[late["client"].unique(), "device"].astype(str)
    waited = (strag.groupby("round")["finish_s"].max() - strag.groupby("round")["median_s"].first()).mean()
    gpus = meta.get("server_gpus", 1)
    return {
        "rounds": len(rounds), "virtual_time_s": makespan,
        "round_s_mean": float(rounds["round_s"].mean()) if len(rounds) else 0.0,
        "round_s_max": float(rounds["round_s"].max()) if len(rounds) else 0.0,
        "phase_share": share,
        "server_utilisation": float(meta.get("server_busy_s", 0.0) / (gpus * makespan)) if makespan else 0.0,
        "queue_wait_mean_s": line.queue_wait_mean_s,
        # jobs per server execution: 1 without batching (older run directories record no batches)
        "server_batch_mean": float(line.queued / meta["server_batches"]) if meta.get("server_batches") else 1.0,
        "participants_mean": float(rounds["participants"].mean()) if len(rounds) else 0.0,
        "infeasible": int((~clients["feasible"]).sum()),
        "dropouts": int(rounds["dropouts"].sum()) if len(rounds) else 0,
        "stragglers": int(late["client"].nunique()),
        "straggler_devices": late_devices.value_counts().to_dict(),
        "straggler_wait_s": float(waited) if not np.isnan(waited) else 0.0,
        "bytes_up": int(rounds["bytes_up"].sum()), "bytes_down": int(rounds["bytes_down"].sum()),
        "server_memory_gb": float(meta.get("server_memory_gb_estimate", 0.0)),
        "metric": meta.get("metric"),
        "train_loss": _last(rounds, "train_loss"), "eval_loss": _last(rounds, "eval_loss"),
        "eval_metric": _last(rounds, "eval_metric"),
        "rounds_wall_s": float(rounds["wall_s"].sum()) if len(rounds) else 0.0,
        "train_s": meta.get("train_s"), "startup_s": meta.get("startup_s"), "startup": meta.get("startup"),
        "on_ray": meta.get("ray", True), "actors_reused": meta.get("actors_reused", False),
        "faults_recovered": len(tables.faults), "faulty_actors": sorted(set(tables.faults["actor"].astype(str))),
        "server_device": meta.get("server_device"),
        "server_timing": _timing_line(meta.get("timing", {}).get("server"), meta.get("server_profile")),
    }


def _timing_line(server: dict | None, profile: str | None) -> str | None:
    if not server:
        return None
    if server["kind"] == "profile":
        return f"the measured profile {server['file']}"
    return (f"the default model ({profile}: {server['flops'] / 1e12:.1f} TFLOP/s sustained, "
            f"{server['mem_gbps']:.0f} GB/s, {server['launch_us']:.0f} us per kernel)")


def _last(rounds: pd.DataFrame, column: str) -> float | None:
    values = rounds[column].dropna() if column in rounds else []
    return float(values.iloc[-1]) if len(values) else None


def _value(x: float | None) -> str:
    """A loss, or "none" where no step or evaluation of the run had one (e.g. every loss NaN)."""
    return "none" if x is None else f"{x:.4f}"


def _fmt_time(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def _n(count: float, word: str) -> str:
    """'1 round', '2 rounds'."""
    return f"{count:,.0f} {word}" + ("" if round(count) == 1 else "s")


def render(summary: dict, directory: str) -> str:
    """The summary as a few plain lines."""
    s = summary
    shares = ", ".join(f"{p} {100 * v:.0f}%" for p, v in s["phase_share"].items() if v >= 0.005) or "-"
    devices = ", ".join(f"{d} x{n}" for d, n in s["straggler_devices"].items()) or "-"
    lines = [
        f"run: {directory}",
        f"virtual time {_fmt_time(s['virtual_time_s'])} over {_n(s['rounds'], 'round')} "
        f"(round mean {_fmt_time(s['round_s_mean'])}, max {_fmt_time(s['round_s_max'])}); "
        f"{_n(s['participants_mean'], 'participant')} per round, {s['infeasible']} infeasible, "
        f"{_n(s['dropouts'], 'dropout')}",
        f"time per phase (client-side sum): {shares}",
        f"server utilisation {100 * s['server_utilisation']:.1f}%, mean queue wait "
        f"{_fmt_time(s['queue_wait_mean_s'])}, {s.get('server_batch_mean', 1.0):.2f} jobs per server batch, "
        f"memory ~{s['server_memory_gb']:.1f} GiB per GPU",
        f"stragglers (> {STRAGGLER_FACTOR}x median finish): {_n(s['stragglers'], 'client')} ({devices}); rounds wait "
        f"{_fmt_time(s['straggler_wait_s'])} on average past the median client",
        f"traffic: {_fmt_bytes(s['bytes_up'])} up, {_fmt_bytes(s['bytes_down'])} down",
    ]
    if s.get("eval_metric") is not None:
        parts = s.get("startup") or {}
        kept = "the previous run's actors, " if s["actors_reused"] else ""  # nothing imported again
        on_ray = (f"Ray {_fmt_time(parts.get('ray_s', 0.0))}, {kept}"  # --local: this process imports and trains
                  f"coordinator process {_fmt_time(parts.get('coordinator_start_s', 0.0))}, " if s["on_ray"] else "")
        where = (f": {on_ray}imports {_fmt_time(parts.get('coordinator_import_s', 0.0))}, "
                 f"model and data {_fmt_time(parts['model_and_data_s'])}, "
                 f"hosts {_fmt_time(parts['hosts_s'])}, "
                 f"after the last step {_fmt_time(parts['other_s'])}"
                 if parts else "")
        took = (f"trained in {_fmt_time(s['train_s'])} after {_fmt_time(s['startup_s'])} of start-up{where}"
                if s.get("train_s") is not None else f"{_fmt_time(s['rounds_wall_s'])} in the rounds")
        lines.append(f"model: train loss {_value(s['train_loss'])}, eval loss {_value(s['eval_loss'])}, "
                     f"{s['metric']} {s['eval_metric']:.4f} after {_n(s['rounds'], 'round')} ({took})")
    device = s.get("server_device")
    timing = s.get("server_timing")
    if device or timing:
        where = f"server computed on {device['device']} (torch {device['torch']}, CUDA {device['cuda'] or '-'}, " \
                f"{_n(device['threads'], 'thread')}); " if device else ""
        lines.append(f"{where}server timed by {timing}")
    if s.get("faults_recovered"):
        lines.append(f"faults: {_n(s['faults_recovered'], 'lost actor')} recovered "
                     f"({', '.join(s['faulty_actors'])}); the run went on from its last recovery point, with the "
                     "tables of a run without them (see the faults table)")
    return "\n".join(lines)
