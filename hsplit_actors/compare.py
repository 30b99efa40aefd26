"""`hsplit compare`: the same fleet, data partition and seed under several methods, side by side.

Each method gets its own run directory (a complete `hsplit run`); the comparison table (CSV and Markdown) and a
plot of the evaluation metric against virtual time are written next to them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import TypeAdapter, ValidationError

from hsplit_actors.errors import ScenarioError
from hsplit_actors.runs import RunTables
from hsplit_actors.scenario.schema import METHOD_NAMES, MethodSpec, Scenario

COLUMNS = ["method", "participants", "final_metric", "best_metric", "target", "time_to_target_s",
           "rounds_to_target", "rounds", "virtual_time_s", "client_trainable_params", "server_trainable_params",
           "bytes_moved", "wall_s", "run_dir"]


def method_spec(scenario: Scenario, name: str):
    """A method's settings: the scenario's own `method:` section when it names this method, otherwise the
    method's defaults; `compare.per_method[name]` is applied on top."""
    base = scenario.method.model_dump() if scenario.method.name == name else {"name": name}
    extra = scenario.compare.per_method.get(name, {})
    try:
        return TypeAdapter(MethodSpec).validate_python(base | extra | {"name": name})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:])
        raise ScenarioError(f"{where}: {first['msg']}", field=f"compare.per_method.{name}") from None


def parse_methods(text: str | None, scenario: Scenario) -> list[str]:
    if not text:
        return list(scenario.compare.methods)
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHOD_NAMES]
    if unknown:
        raise ScenarioError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHOD_NAMES)}",
                            field="--methods")
    return names


def _reached(rounds: pd.DataFrame, target: float, higher: bool) -> pd.DataFrame:
    metric = rounds["eval_metric"]
    return rounds[(metric >= target) if higher else (metric <= target)]


def comparison_table(results: dict[str, tuple[RunTables, dict, Path]], target: float | None = None) -> pd.DataFrame:
    """One row per method. `target` defaults to the best metric every method reached (so each time is defined)."""
    metrics = {meta.get("metric", "accuracy") for _, meta, _ in results.values()}
    higher = metrics != {"perplexity"}
    bests = {m: (t.rounds["eval_metric"].max() if higher else t.rounds["eval_metric"].min())
             for m, (t, _, _) in results.items()}
    finite = [b for b in bests.values() if np.isfinite(b)]
    if target is None and finite:
        target = min(finite) if higher else max(finite)
    rows = []
    for method, (tables, meta, directory) in results.items():
        rounds, clients = tables.rounds, tables.clients
        taking_part = clients[clients["feasible"]]
        evaluated = rounds.dropna(subset=["eval_metric"])
        hit = _reached(evaluated, target, higher) if target is not None else evaluated.iloc[:0]
        rows.append({
            "method": method,
            "participants": f"{int(clients['feasible'].sum())}/{len(clients)}",
            "final_metric": float(evaluated["eval_metric"].iloc[-1]) if len(evaluated) else np.nan,
            "best_metric": float(bests[method]),
            "target": target,
            "time_to_target_s": float(hit["t_end"].iloc[0]) if len(hit) else np.nan,
            "rounds_to_target": int(hit["round"].iloc[0]) + 1 if len(hit) else np.nan,
            "rounds": len(rounds),
            "virtual_time_s": float(rounds["t_end"].iloc[-1]),
            "client_trainable_params": float(taking_part["trainable_params"].mean()) if len(taking_part) else 0.0,
            "server_trainable_params": float(taking_part["server_trainable_params"].mean())
            if len(taking_part) else 0.0,
            "bytes_moved": int((rounds["bytes_up"] + rounds["bytes_down"]).sum()),
            "wall_s": float(meta.get("wall_s", np.nan)),
            "run_dir": str(directory),
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(table: pd.DataFrame, metric: str) -> str:
    """A Markdown table a person reads (no extra dependency)."""
    shown = table.drop(columns=["run_dir"])
    header = [c.replace("metric", metric) for c in shown.columns]

    def fmt(column: str, value) -> str:
        if isinstance(value, float) and np.isnan(value):
            return "not reached" if column.endswith("to_target") or column == "time_to_target_s" else "-"
        if isinstance(value, float):
            return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
        if isinstance(value, (int, np.integer)):
            return f"{int(value):,}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c, v) for c, v in zip(shown.columns, row, strict=True)) + " |"
              for row in shown.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def plot_comparison(results: dict[str, tuple[RunTables, dict, Path]], metric: str, path: Path,
                    target: float | None = None) -> Path:
    """Eval metric against virtual time, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for method, (tables, _, _) in results.items():
        rounds = tables.rounds.dropna(subset=["eval_metric"])
        ax.plot(rounds["t_end"], rounds["eval_metric"], marker="o", markersize=3, label=method)
    if target is not None and np.isfinite(target):
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.3g}")
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel(metric)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def compare(scenario: Scenario, methods: list[str] | None = None, out: str | Path | None = None,
            address: str | None = None, on_method: Callable[[str], Callable | None] | None = None):
    """Run every method on the same scenario; returns (directory, comparison table)."""
    from hsplit_actors.training.run import run

    methods = methods or list(scenario.compare.methods)
    specs = {name: method_spec(scenario, name) for name in methods}  # all checked before anything runs
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    directory = Path(out) if out else Path(scenario.output_dir) / f"{scenario.name}-compare-{stamp}"
    if directory.exists():
        raise FileExistsError(f"comparison directory {directory} already exists; choose another --out")
    directory.mkdir(parents=True)
    results: dict[str, tuple[RunTables, dict, Path]] = {}
    for name, spec in specs.items():
        progress = on_method(name) if on_method else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exclusions are reported in the table (participants) instead
            run_dir, tables, extra = run(scenario.model_copy(update={"method": spec}), directory / name, address,
                                         on_progress=progress)
        meta = json.loads((run_dir / "meta.json").read_text())
        results[name] = (tables, meta, run_dir)
    metric = next(iter(results.values()))[1].get("metric", "accuracy")
    table = comparison_table(results, scenario.compare.target)
    table.to_csv(directory / "comparison.csv", index=False)
    (directory / "comparison.md").write_text(to_markdown(table, metric))
    plot_comparison(results, metric, directory / "comparison.png", table["target"].iloc[0] if len(table) else None)
    return directory, table
