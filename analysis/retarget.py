"""A finished comparison's per-variant table at another time-to-target threshold, without touching its runs: for a
target fixed before the runs that turned out out of reach, the secondary analysis says what each method reaches
and when (mark it as chosen after the runs wherever it is reported).

    python analysis/retarget.py runs/paper_regime --target 0.75 --out results/paper_regime/target_75
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from hsplit_actors.comparison.report import plot_curves, to_markdown
from hsplit_actors.comparison.stats import PER_RUN, per_variant, run_figures
from hsplit_actors.runs import read_run

SHOWN = ["reached", "final_metric", "best_metric", "time_to_target_s", "auc_metric", "round_s_mean"]


def final_runs(comparison: Path) -> list[tuple[str, int, Path]]:
    """(variant, seed, directory) of every final (not tuning) run, in the comparison's variant order."""
    per_seed = pd.read_csv(comparison / "per_seed.csv")
    return [(row.variant, int(row.seed), Path(row.run_dir)) for row in per_seed.itertuples()]


def retarget(comparison: Path, target: float, hold: int, out: Path) -> pd.DataFrame:
    runs = [(v, s, read_run(d), json.loads((d / "meta.json").read_text())) for v, s, d in final_runs(comparison)]
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
    header = f"metric: {metric}; target {target:.4g} held for {hold} evaluations (chosen after the runs)\n\n"
    (out / "comparison.md").write_text(header + to_markdown(table, SHOWN))
    curves: dict[str, list] = {}
    for v, _, t, _ in runs:
        evaluated = t.rounds.dropna(subset=["eval_metric"])
        curves.setdefault(v, []).append((evaluated["t_end"].to_numpy(float), evaluated["eval_metric"].to_numpy(float)))
    plot_curves(curves, metric, out / "comparison.png", target)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparison", type=Path)
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--hold", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(retarget(args.comparison, args.target, args.hold, args.out).to_string())


if __name__ == "__main__":
    main()
