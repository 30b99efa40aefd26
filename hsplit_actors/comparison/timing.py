"""`hsplit compare --plan`: what a run of each variant would cost, from the timing model alone (no weights, any
model size): round time, time per phase, traffic, memory, trainable parameters, exclusions, split points."""

from __future__ import annotations

import pandas as pd

from hsplit_actors import timeline
from hsplit_actors.engine.session import PHASES
from hsplit_actors.errors import ScenarioError
from hsplit_actors.runs import RunTables
from hsplit_actors.scenario.schema import Scenario

PLAN_COLUMNS = ["round_s_mean", *[f"{p}_s" for p in PHASES], "bytes_per_round", "client_memory_gb_mean",
                "client_memory_gb_max", "server_memory_gb", "client_trainable_params", "server_trainable_params",
                "infeasible", "virtual_time_s"]


def refuse_training_settings(scenario: Scenario) -> None:
    """`--plan` trains nothing: settings that only training reads would be silently ignored, so they are refused."""
    if scenario.compare.tune:
        raise ScenarioError("tuning needs training; drop compare.tune, or run `hsplit compare` without --plan",
                            field="compare.tune")
    for name, raw in (scenario.compare.variants or {}).items():
        if raw and "tune" in raw:
            raise ScenarioError("tuning needs training; drop it, or run without --plan",
                                field=f"compare.variants.{name}.tune")
    if scenario.train.kill_actor:
        raise ScenarioError("fault injection needs training; drop it, or run without --plan", field="train.kill_actor")
    if scenario.train.evaluate_on != "test":
        raise ScenarioError("--plan evaluates nothing; drop train.evaluate_on", field="train.evaluate_on")


def plan_figures(tables: RunTables, meta: dict) -> dict:
    """One timing-only run's row."""
    rounds, clients = tables.rounds, tables.clients
    phases = meta.get("phases") or timeline.from_events(tables.events).meta()  # older runs: from their events
    per_phase = {p: s / max(phases["iterations"], 1) for p, s in phases["seconds"].items()}
    feasible = clients[clients["feasible"]]
    splits = feasible["split_point"].value_counts().sort_index()
    row = {
        "round_s_mean": float(rounds["round_s"].mean()) if len(rounds) else 0.0,
        **{f"{p}_s": float(per_phase.get(p, 0.0)) for p in PHASES},
        "bytes_per_round": float((rounds["bytes_up"] + rounds["bytes_down"]).mean()) if len(rounds) else 0.0,
        "client_memory_gb_mean": float(feasible["memory_estimate_gb"].mean()) if len(feasible) else 0.0,
        "client_memory_gb_max": float(feasible["memory_estimate_gb"].max()) if len(feasible) else 0.0,
        "server_memory_gb": float(meta.get("server_memory_gb_estimate", 0.0)),
        "client_trainable_params": float(feasible["trainable_params"].mean()) if len(feasible) else 0.0,
        "server_trainable_params": float(feasible["server_trainable_params"].mean()) if len(feasible) else 0.0,
        "infeasible": int((~clients["feasible"]).sum()),
        "virtual_time_s": float(rounds["t_end"].iloc[-1]) if len(rounds) else 0.0,
        "split_points": " ".join(f"{int(k)}:{int(n)}" for k, n in splits.items()),
    }
    return row


def merge_split_points(column: pd.Series) -> str:
    """`k:n` counts summed over seeds: which split points the variant's clients got, and how many."""
    total: dict[int, int] = {}
    for text in column:
        for part in str(text).split():
            k, n = part.split(":")
            total[int(k)] = total.get(int(k), 0) + int(n)
    return " ".join(f"{k}:{n}" for k, n in sorted(total.items()))


def split_histogram(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Variant x split point: the share of its (feasible) clients at each split, over all seeds."""
    rows = {}
    for variant, group in per_seed.groupby("variant", sort=False):
        counts = {int(k): int(n) for k, n in (p.split(":") for p in merge_split_points(group["split_points"]).split())}
        total = sum(counts.values()) or 1
        rows[variant] = {k: n / total for k, n in counts.items()}
    return pd.DataFrame(rows).T.sort_index(axis=1).fillna(0.0) if rows else pd.DataFrame()
