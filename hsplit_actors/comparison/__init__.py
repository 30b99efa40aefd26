"""`hsplit compare`: variants (a method with overrides) under several seeds on the same scenario, optionally tuned
on a validation split first, run side by side on Ray (`sweep.py`); per-seed rows, a per-variant table of means
with 95% confidence intervals, and a plot of mean curves with bands. `--plan` compares timing alone."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from hsplit_actors.comparison.report import plot_curves, plot_round_time, to_markdown
from hsplit_actors.comparison.stats import PER_RUN, default_target, per_variant, run_figures
from hsplit_actors.comparison.timing import (
    PLAN_COLUMNS,
    merge_split_points,
    plan_figures,
    refuse_training_settings,
    split_histogram,
)
from hsplit_actors.comparison.variants import Job, grid_of, point_label, resolve, seeds_of, select, with_seed
from hsplit_actors.engine.session import PHASES
from hsplit_actors.errors import Interrupted, ScenarioError
from hsplit_actors.runs import is_complete, read_run
from hsplit_actors.scenario import dump_scenario, load_scenario
from hsplit_actors.scenario.schema import Scenario

SHOWN = ["final_metric", "best_metric", "time_to_target_s", "first_touch_s", "auc_metric", "bytes_moved",
         "client_trainable_params", "server_trainable_params"]


def _read(directory: Path) -> tuple:
    return read_run(directory), json.loads((directory / "meta.json").read_text())


def plan_jobs(scenario: Scenario, variants: dict[str, dict], plan_only: bool) -> tuple[dict, list[Job], int]:
    """Every variant's tuning points (checked), the tuning jobs, and the validation samples every run holds out
    (so tuning and final runs draw the clients' data from the same pool)."""
    grids = {name: ([{}] if plan_only else grid_of(scenario, name, raw)) for name, raw in variants.items()}
    tuned = any(point for grid in grids.values() for point in grid)
    held_out = scenario.compare.validation_samples if tuned else scenario.data.validation_samples
    jobs = []
    for name, raw in variants.items():
        for point in grids[name]:
            resolved = resolve(scenario, name, raw, point)  # every variant and point checked before anything runs
            if not tuned:
                continue
            for seed in scenario.compare.tune_seeds or seeds_of(scenario):
                # a tuning run's model is thrown away: no export (the final runs keep theirs)
                jobs.append(Job(f"tune/{name}/{point_label(point)}/seed{seed}", name, seed, "tune", point,
                                with_seed(resolved, seed, validation_samples=held_out, evaluate_on="validation",
                                          export=False)))
    return grids, jobs, held_out


def choose(scenario: Scenario, directory: Path, jobs: list[Job]) -> tuple[dict[str, dict], pd.DataFrame]:
    """Per variant, the tuning point with the best mean validation figure over seeds (`compare.tune_by`); written
    to tuning.csv, then held to the guard (`refuse_untuned`)."""
    rows = []
    read = {job.key: _read(directory / job.key) for job in jobs}
    horizon: dict[str, float] = {}  # per variant: its shortest tuning run's last evaluation (the AUC's span)
    for job in jobs:
        end = float(read[job.key][0].rounds.dropna(subset=["eval_metric"])["t_end"].iloc[-1])
        horizon[job.variant] = min(horizon.get(job.variant, end), end)
    for job in jobs:
        tables, meta = read[job.key]
        higher = meta.get("metric", "accuracy") != "perplexity"
        figures = run_figures(tables, meta, None, 1, horizon[job.variant])
        value = figures["final_metric"] if scenario.compare.tune_by == "final" else figures["auc_metric"]
        rows.append({"variant": job.variant, "point": point_label(job.point), "seed": job.seed,
                     "validation_" + scenario.compare.tune_by: value, "higher_is_better": higher,
                     "run_dir": job.key})
    table = pd.DataFrame(rows)
    figure = "validation_" + scenario.compare.tune_by
    chosen: dict[str, dict] = {}
    table["chosen"] = False
    for variant, group in table.groupby("variant", sort=False):
        means = group.groupby("point", sort=False)[figure].mean()
        best = means.idxmax() if group["higher_is_better"].iloc[0] else means.idxmin()
        chosen[variant] = next(j.point for j in jobs if j.variant == variant and point_label(j.point) == best)
        table.loc[(table["variant"] == variant) & (table["point"] == best), "chosen"] = True
    table.to_csv(directory / "tuning.csv", index=False)  # kept, whatever the guard says: it shows why
    if scenario.compare.tune_guard:
        for variant, group in table.groupby("variant", sort=False):
            means = group.groupby("point", sort=False)[figure].mean()
            refuse_untuned(variant, means, read[group["run_dir"].iloc[0]][1], scenario.compare.tune_by)
    return chosen, table


def warn_per_variant(scenario: Scenario, variants: dict[str, dict]) -> None:
    """What `plan` would warn about each variant (devices that cannot hold its configuration, data shares),
    said once here, named by variant: the runs themselves are quiet (their tables say it per run)."""
    from hsplit_actors.preparation import prepare

    for name, raw in variants.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prepare(resolve(scenario, name, raw))
        for said in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)):
            category = next(w.category for w in caught if str(w.message) == said)
            warnings.warn(f"{name}: {said}", category, stacklevel=2)


def refuse_untuned(variant: str, means: pd.Series, meta: dict, figure: str) -> None:
    """Tuning that cannot crown chance: accuracy within 2 standard errors of the majority-class rate at the best
    point, or all points within 1 standard error of each other (a tie), is no working point; say so and stop."""
    rate, n = meta.get("eval_majority_rate"), meta.get("eval_size")
    if rate is None or not n:  # perplexity: no class to predict
        return
    se = math.sqrt(rate * (1 - rate) / n)
    best, where = float(means.max()), means.idxmax()
    fix = "widen compare.tune (e.g. lr down to 1e-5), or set compare.tune_guard: false to run it anyway"
    if best <= rate + 2 * se:
        raise ScenarioError(f"tuning found no working point for variant {variant!r}: its best validation accuracy "
                            f"{best:.3f} ({where}) is within noise of predicting the majority class ({rate:.3f}, "
                            f"{n} samples); {fix}", field="compare.tune")
    if len(means) > 1 and float(means.max() - means.min()) <= se:
        raise ScenarioError(f"tuning cannot tell the points of variant {variant!r} apart: validation {figure} "
                            f"{float(means.min()):.3f}-{best:.3f} over {', '.join(means.index)}, within one "
                            f"standard error ({se:.3f}); {fix}", field="compare.tune")


def compare(scenario: Scenario | None, names: str | None = None, out: str | Path | None = None,
            address: str | None = None, plan_only: bool = False, resume: str | Path | None = None,
            on_run: Callable[[str, int], None] | None = None,
            more_seeds: list[int] | None = None) -> tuple[Path, pd.DataFrame]:
    """Run (or `resume`) a comparison; returns its directory and the per-variant table. `on_run(key, total)` is
    told each finished run. `more_seeds` (with `resume`): the seeds the resumed comparison ends with; runs of the
    seeds it had are kept."""
    from hsplit_actors.comparison.sweep import sweep
    from hsplit_actors.training.run import connect

    if resume is not None:
        directory = Path(resume)
        if not (directory / "compare.json").is_file():
            raise ScenarioError(f"{directory} is not a comparison directory (no compare.json)", field="--resume")
        state = json.loads((directory / "compare.json").read_text())
        scenario, names, plan_only = load_scenario(directory / "scenario.yaml"), state["variants"], state["plan"]
        names = ",".join(names)
        if more_seeds is not None:
            scenario = scenario.model_copy(update={"compare": scenario.compare.model_copy(
                update={"seeds": more_seeds})})
            (directory / "scenario.yaml").write_text(dump_scenario(scenario))
    if plan_only:
        refuse_training_settings(scenario)
    variants = select(scenario, names)
    warn_per_variant(scenario, variants)
    grids, tune_jobs, held_out = plan_jobs(scenario, variants, plan_only)
    seeds = seeds_of(scenario)
    if resume is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        directory = Path(out) if out else Path(scenario.output_dir) / f"{scenario.name}-compare-{stamp}"
        if directory.exists():
            raise ScenarioError(f"comparison directory {directory} already exists; choose another --out "
                                  "(or continue it with --resume)")
        directory.mkdir(parents=True)
        (directory / "scenario.yaml").write_text(dump_scenario(scenario))
        (directory / "compare.json").write_text(json.dumps({"variants": list(variants), "plan": plan_only}))
    mode = "plan" if plan_only else "run"
    total = len(tune_jobs) + len(variants) * len(seeds)
    done = 0

    def finished(key: str) -> None:
        nonlocal done
        done += 1
        if on_run is not None:
            on_run(key, total)

    connect(address or scenario.ray.address)
    cpus = scenario.compare.cpus_per_run
    try:
        nodes = sweep(tune_jobs, directory, mode, "tune", cpus, finished)
        chosen: dict[str, dict] = {name: {} for name in variants}
        if tune_jobs:
            chosen, tuning = choose(scenario, directory, tune_jobs)
        final_jobs = [Job(f"{name}/seed{seed}", name, seed, "final", chosen[name],
                          with_seed(resolve(scenario, name, raw, chosen[name]), seed, validation_samples=held_out))
                      for name, raw in variants.items() for seed in seeds]
        nodes |= sweep(final_jobs, directory, mode, "final", cpus, finished)
    except KeyboardInterrupt:  # finished runs are kept; unfinished training runs resume from their checkpoints
        finished_runs = sum(is_complete(meta.parent) for meta in directory.glob("**/meta.json"))
        raise Interrupted(f"interrupted with {finished_runs} of {total} runs finished; continue it with hsplit "
                          f"compare --resume {directory}") from None
    placement = directory / "placement.json"  # a resumed sweep adds to what the first one placed
    earlier = json.loads(placement.read_text()) if placement.is_file() else {}
    placement.write_text(json.dumps(earlier | nodes, indent=1))
    if plan_only:
        return directory, _plan_tables(directory, final_jobs)
    return directory, _training_tables(scenario, directory, final_jobs)


def _base_row(job: Job, directory: Path) -> dict:
    return {"variant": job.variant, "method": job.scenario.method.name, "seed": job.seed,
            "tuned": json.dumps(job.point) if job.point else "", "run_dir": str(directory / job.key)}


def _training_tables(scenario: Scenario, directory: Path, jobs: list[Job]) -> pd.DataFrame:
    read = {job.key: _read(directory / job.key) for job in jobs}
    metric = next(iter(read.values()))[1].get("metric", "accuracy")
    higher = metric != "perplexity"
    bests = pd.Series([run_figures(t, m, None, 1, 1.0)["best_metric"] for t, m in read.values()])
    target = scenario.compare.target if scenario.compare.target is not None else default_target(bests, higher)
    ends = [t.rounds.dropna(subset=["eval_metric"])["t_end"] for t, _ in read.values()]
    horizon = float(min(e.iloc[-1] for e in ends if len(e))) if any(len(e) for e in ends) else math.nan
    rows = [_base_row(job, directory) | run_figures(*read[job.key], target, scenario.compare.hold, horizon)
            | {"fleet_size": len(read[job.key][0].clients), "target": target, "hold": scenario.compare.hold,
               "auc_horizon_s": horizon} for job in jobs]
    per_seed = pd.DataFrame(rows)
    per_seed.to_csv(directory / "per_seed.csv", index=False)
    table = per_variant(per_seed, [c for c in PER_RUN if c != "participants"])
    table["participants"] = [f"{g['participants'].mean():.3g}/{g['fleet_size'].iloc[0]}"
                             for _, g in per_seed.groupby("variant", sort=False)]
    table["tuned"] = [point_label(json.loads(g["tuned"].iloc[0])) if g["tuned"].iloc[0] else "not tuned"
                      for _, g in per_seed.groupby("variant", sort=False)]
    table["target"], table["hold"], table["metric"] = target, scenario.compare.hold, metric
    table.to_csv(directory / "comparison.csv", index=False)
    header = f"metric: {metric}; target {target:.4g} held for {scenario.compare.hold} evaluations\n\n" \
        if target is not None else f"metric: {metric}\n\n"
    (directory / "comparison.md").write_text(header + to_markdown(table, ["tuned", "participants", "reached", *SHOWN]))
    curves = {}
    for job in jobs:
        evaluated = read[job.key][0].rounds.dropna(subset=["eval_metric"])
        curves.setdefault(job.variant, []).append((evaluated["t_end"].to_numpy(float),
                                                   evaluated["eval_metric"].to_numpy(float)))
    plot_curves(curves, metric, directory / "comparison.png", target)
    return table


def _plan_tables(directory: Path, jobs: list[Job]) -> pd.DataFrame:
    rows = [_base_row(job, directory) | plan_figures(*_read(directory / job.key)) for job in jobs]
    per_seed = pd.DataFrame(rows)
    per_seed.to_csv(directory / "per_seed.csv", index=False)
    table = per_variant(per_seed, PLAN_COLUMNS)
    table["split_points"] = [merge_split_points(g["split_points"]) for _, g in per_seed.groupby("variant", sort=False)]
    table.to_csv(directory / "comparison.csv", index=False)
    split_histogram(per_seed).to_csv(directory / "split_points.csv")
    shown = ["round_s_mean", "bytes_per_round", "client_memory_gb_mean", "server_memory_gb",
             "client_trainable_params", "server_trainable_params", "infeasible", "split_points"]
    (directory / "comparison.md").write_text(to_markdown(table, shown))
    plot_round_time(table, list(PHASES), directory / "comparison.png")
    return table

