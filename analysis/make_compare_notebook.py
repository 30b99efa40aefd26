"""Writes analysis/compare.ipynb (kept as code here so the notebook's source is reviewable)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("# Variants side by side\n\nReads a directory written by `hsplit compare` (set `COMPARE_DIR`, "
                      "or the `HSPLIT_COMPARE_DIR` environment variable; by default the newest under `runs/`): the "
                      "per-variant table (mean ± 95% CI over seeds), the per-seed rows, the metric against virtual "
                      "time, where each variant's iteration time goes, and what HSplitLoRA chose."),
    new_code_cell("%matplotlib inline\nimport os\nfrom pathlib import Path\n\nimport matplotlib.pyplot as plt\n"
                  "import pandas as pd\n\nfrom hsplit_actors.plotting import importance_heatmap, phase_breakdown, "
                  "rank_map\nfrom hsplit_actors.runs import read_run\n\n"
                  "COMPARE_DIR = os.environ.get('HSPLIT_COMPARE_DIR')\nif COMPARE_DIR is None:\n"
                  "    found = sorted(Path('../runs').glob('*/comparison.csv'), key=lambda p: p.stat().st_mtime)\n"
                  "    COMPARE_DIR = str(found[-1].parent)\n"
                  "table = pd.read_csv(Path(COMPARE_DIR) / 'comparison.csv')\n"
                  "per_seed = pd.read_csv(Path(COMPARE_DIR) / 'per_seed.csv')\n"
                  "runs = {(r.variant, r.seed): read_run(r.run_dir) for r in per_seed.itertuples()}\ntable"),
    new_code_cell("per_seed"),
    new_markdown_cell("## The metric against virtual time (one line per seed)"),
    new_code_cell("fig, ax = plt.subplots(figsize=(8, 4))\ncolours = {}\nfor (variant, seed), t in runs.items():\n"
                  "    r = t.rounds.dropna(subset=['eval_metric'])\n    if r.empty:\n        continue\n"
                  "    line, = ax.plot(r['t_end'], r['eval_metric'], marker='o', markersize=3, color=colours.get("
                  "variant), label=None if variant in colours else variant)\n"
                  "    colours[variant] = line.get_color()\n"
                  "if 'target' in table and table['target'].notna().any():\n"
                  "    ax.axhline(table['target'].iloc[0], color='grey', linestyle='--')\n"
                  "ax.set_xlabel('virtual time (s)'); ax.legend()\nplt.show()"),
    new_markdown_cell("## Where an iteration's time goes (seconds per phase, mean over device types and seeds)"),
    new_code_cell("pd.DataFrame({v: pd.concat([phase_breakdown(t.events, t.clients).mean() for (w, _), t in "
                  "runs.items() if w == v], axis=1).mean(axis=1) for v in table['variant']}).T.round(3)"),
    new_markdown_cell("## HSplitLoRA: importance, split points and ranks (its first seed)"),
    new_code_cell("hsplit = [key for key, t in runs.items() if len(t.importance)]\nif hsplit:\n"
                  "    importance_heatmap(runs[hsplit[0]].importance)\n    plt.show()\n"
                  "    display(rank_map(runs[hsplit[0]].clients))"),
]
notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})
nbformat.write(notebook, Path(__file__).with_name("compare.ipynb"))
