"""Writes analysis/timeline.ipynb (kept as code here so the notebook's source is reviewable)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("# Timeline of a run\n\nReads one run directory (from `hsplit plan` or `hsplit run`) and shows "
                      "who does what when: a Gantt chart of the first clients' phases, the server queue and "
                      "utilisation over virtual time, and where an iteration's time goes per device type.\n\n"
                      "Set `RUN_DIR` below, or the `HSPLIT_RUN_DIR` environment variable; by default the newest "
                      "run under `runs/`."),
    new_code_cell("%matplotlib inline\nimport json, os\nfrom pathlib import Path\n\nimport matplotlib.pyplot as plt\n\n"
                  "from hsplit_actors.plotting import gantt, phase_breakdown, phase_breakdown_plot, server_timeline\n"
                  "from hsplit_actors.runs import read_run\nfrom hsplit_actors.summary import summarise, stragglers\n\n"
                  "RUN_DIR = os.environ.get('HSPLIT_RUN_DIR')\nif RUN_DIR is None:\n"
                  "    runs = sorted(Path('../runs').glob('*/meta.json'), key=lambda p: p.stat().st_mtime)\n"
                  "    RUN_DIR = str(runs[-1].parent)\n"
                  "tables = read_run(RUN_DIR)\nmeta = json.loads((Path(RUN_DIR) / 'meta.json').read_text())\n"
                  "events, rounds, clients = tables.events, tables.rounds, tables.clients\nprint(RUN_DIR)\n"
                  "summarise(tables, meta)"),
    new_markdown_cell("## Phases of the first clients"),
    new_code_cell("gantt(events, clients, n_clients=10, rounds=(0,))\nplt.show()"),
    new_markdown_cell("## Server queue and utilisation"),
    new_code_cell("server_timeline(events, gpus=meta.get('server_gpus', 1))\nplt.show()"),
    new_markdown_cell("## Where the time goes, per device type"),
    new_code_cell("phase_breakdown_plot(events, clients)\nplt.show()\nphase_breakdown(events, clients).round(3)"),
    new_markdown_cell("## Rounds and stragglers"),
    new_code_cell("late = stragglers(events)\nlate['device'] = late['client'].map(clients.set_index('client')"
                  "['device'])\ndisplay(rounds)\nlate[late['straggler']].groupby('device', observed=True).size()"),
]
notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})
nbformat.write(notebook, Path(__file__).with_name("timeline.ipynb"))
