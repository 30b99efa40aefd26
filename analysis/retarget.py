"""A finished comparison's per-variant table at another time-to-target threshold, without touching its runs: for a
target fixed before the runs that turned out out of reach, the secondary analysis says what each method reaches
and when (mark it as chosen after the runs wherever it is reported). Several comparisons of the same scenario can
be read as one (`DIR:variant,variant` takes only those variants of DIR), and `--paired-with V` adds each
variant's per-seed difference from V in final and best metric and time (mean and 95% interval over the seeds
both have).

    python analysis/retarget.py runs/paper_regime --target 0.75 --out results/paper_regime/target_75
    python analysis/retarget.py runs/paper_regime:hsplitlora runs/paper_ablation --target 0.75 \
        --paired-with hsplitlora --out results/paper_ablation/target_75
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from hsplit_actors.comparison.report import plot_curves, to_markdown
from hsplit_actors.comparison.stats import PER_RUN, mean_ci, per_variant, run_figures
from hsplit_actors.runs import read_run

SHOWN = ["reached", "final_metric", "best_metric", "time_to_target_s", "auc_metric", "round_s_mean"]


def final_runs(comparison: str | Path) -> list[tuple[str, int, Path]]:
    """(variant, seed, directory) of every final (not tuning) run, in the comparison's variant order; `DIR:a,b`
    keeps variants a and b only. A run directory is found as recorded, else under the comparison directory."""
    where, _, only = str(comparison).partition(":")
    per_seed = pd.read_csv(Path(where) / "per_seed.csv")
    keep = set(only.split(",")) if only else set(per_seed["variant"])
    found = []
    for row in per_seed[per_seed["variant"].isin(keep)].itertuples():
        recorded = Path(row.run_dir)
        found.append((row.variant, int(row.seed), recorded if recorded.is_dir()
                      else Path(where) / row.variant / recorded.name))
    return found


def paired(per_seed: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per variant: its per-seed difference from `reference` (same seeds), mean ± 95% interval."""
    columns = ["final_metric", "best_metric", "time_to_target_s"]
    base = per_seed[per_seed["variant"] == reference].set_index("seed")[columns]
    rows = []
    for variant, group in per_seed[per_seed["variant"] != reference].groupby("variant", sort=False):
        diff = group.set_index("seed")[columns] - base
        row = {"variant": variant, "vs": reference, "seeds": int(diff["final_metric"].notna().sum())}
        for column in columns:
            mean, half, n = mean_ci(diff[column].dropna())
            row[f"{column}_diff"] = f"{mean:+.4g} ± {half:.2g}" if n > 1 else ("-" if n == 0 else f"{mean:+.4g}")
        rows.append(row)
    return pd.DataFrame(rows)


def retarget(comparisons: list[str], target: float, hold: int, out: Path,
             reference: str | None = None, chosen_after: bool = True) -> pd.DataFrame:
    listed = [run for comparison in comparisons for run in final_runs(comparison)]
    runs = [(v, s, read_run(d), json.loads((d / "meta.json").read_text())) for v, s, d in listed]
    ends = [t.rounds.dropna(subset=["eval_metric"])["t_end"] for _, _, t, _ in runs]
    horizon = float(min(e.iloc[-1] for e in ends))
    rows = [{"variant": v, "method": m["method"], "seed": s} | run_figures(t, m, target, hold, horizon)
            for v, s, t, m in runs]
    per_seed = pd.DataFrame(rows)
    table = per_variant(per_seed, [c for c in PER_RUN if c not in ("participants", "wall_s")])
    metric = runs[0][3].get("metric", "accuracy")
    out.mkdir(parents=True, exist_ok=True)
    per_seed.to_csv(out / "per_seed.csv", index=False)
    table.to_csv(out / "comparison.csv", index=False)
    after = " (chosen after the runs)" if chosen_after else " (fixed before the runs)"
    header = f"metric: {metric}; target {target:.4g} held for {hold} evaluations{after}\n\n"
    text = header + to_markdown(table, SHOWN)
    if reference is not None:
        differences = paired(per_seed, reference)
        differences.to_csv(out / "paired.csv", index=False)
        text += f"\n\nPaired by seed, against {reference}:\n\n" + differences.to_markdown(index=False)
    (out / "comparison.md").write_text(text)
    curves: dict[str, list] = {}
    for v, _, t, _ in runs:
        evaluated = t.rounds.dropna(subset=["eval_metric"])
        curves.setdefault(v, []).append((evaluated["t_end"].to_numpy(float), evaluated["eval_metric"].to_numpy(float)))
    plot_curves(curves, metric, out / "comparison.png", target)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparisons", nargs="+", help="comparison directories (DIR, or DIR:variant,variant)")
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--hold", type=int, default=2)
    parser.add_argument("--paired-with", help="a variant to difference every other against, seed by seed")
    parser.add_argument("--fixed-before", action="store_true", help="the target was fixed before the runs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(retarget(args.comparisons, args.target, args.hold, args.out, args.paired_with,
                   not args.fixed_before).to_string())


if __name__ == "__main__":
    main()
