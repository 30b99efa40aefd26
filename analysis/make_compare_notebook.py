"""Writes analysis/compare.ipynb (kept as code here so the notebook's source is reviewable)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("# Methods side by side\n\nReads a directory written by `hsplit compare` (set `COMPARE_DIR`, or "
                      "the `HSPLIT_COMPARE_DIR` environment variable; by default the newest under `runs/`): the "
                      "comparison table, accuracy against virtual time, where each method's round time goes, and "
                      "what HSplitLoRA chose (importance, split points, ranks)."),
    new_code_cell("%matplotlib inline\nimport os\nfrom pathlib import Path\n\nimport matplotlib.pyplot as plt\n"
                  "import pandas as pd\n\nfrom hsplit_actors.plotting import importance_heatmap, phase_breakdown, "
                  "rank_map\nfrom hsplit_actors.runs import read_run\n\n"
                  "COMPARE_DIR = os.environ.get('HSPLIT_COMPARE_DIR')\nif COMPARE_DIR is None:\n"
                  "    found = sorted(Path('../runs').glob('*/comparison.csv'), key=lambda p: p.stat().st_mtime)\n"
                  "    COMPARE_DIR = str(found[-1].parent)\n"
                  "table = pd.read_csv(Path(COMPARE_DIR) / 'comparison.csv')\n"
                  "runs = {m: read_run(Path(COMPARE_DIR) / m) for m in table['method']}\ntable"),
    new_markdown_cell("## Test metric against virtual time"),
    new_code_cell("fig, ax = plt.subplots(figsize=(8, 4))\nfor method, t in runs.items():\n"
                  "    r = t.rounds.dropna(subset=['eval_metric'])\n"
                  "    ax.plot(r['t_end'], r['eval_metric'], marker='o', markersize=3, label=method)\n"
                  "ax.axhline(table['target'].iloc[0], color='grey', linestyle='--')\n"
                  "ax.set_xscale('symlog', linthresh=1.0); ax.set_xlabel('virtual time (s)'); ax.legend()\n"
                  "plt.show()"),
    new_markdown_cell("## Where an iteration's time goes (seconds per phase, mean over device types)"),
    new_code_cell("pd.DataFrame({m: phase_breakdown(t.events, t.clients).mean() for m, t in runs.items()}).T"
                  ".round(3)"),
    new_markdown_cell("## HSplitLoRA: importance, split points and ranks"),
    new_code_cell("if 'hsplitlora' in runs and len(runs['hsplitlora'].importance):\n"
                  "    importance_heatmap(runs['hsplitlora'].importance)\n    plt.show()\n"
                  "    display(rank_map(runs['hsplitlora'].clients))"),
]
notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})
nbformat.write(notebook, Path(__file__).with_name("compare.ipynb"))
