"""A run's curves as TensorBoard event files (`train.tensorboard: true`): one point per aggregation, its step the
published version and its time the virtual time (TensorBoard's "Relative" axis then reads virtual hours).

Written from the finished tables, so the files hold exactly the rounds table's values. `hsplit compare` runs each
trial with the same setting: `tensorboard --logdir COMPARISON_DIR` shows every variant and seed side by side.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hsplit_actors.runs import RunTables

FOLDER = "tensorboard"
# rounds-table column -> tag; eval_metric is tagged by what it measures (accuracy, perplexity)
SCALARS = {"train_loss": "loss/train", "eval_loss": "loss/eval", "staleness_mean": "staleness/mean",
           "staleness_max": "staleness/max", "queue_wait_s": "server/queue_wait_s", "bytes_up": "traffic/bytes_up",
           "bytes_down": "traffic/bytes_down", "round_s": "time/round_s", "participants": "clients/participants"}


def per_aggregation(tables: RunTables) -> pd.DataFrame:
    """The rounds that published a version (with the mean server queue wait of each, `queue_wait_s`)."""
    return tables.rounds[tables.rounds["aggregated"]]


def write(directory: str | Path, tables: RunTables, metric: str) -> Path:
    """Event files under `directory/tensorboard/`; returns that folder."""
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(directory) / FOLDER
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for _, row in per_aggregation(tables).iterrows():
            step, when = int(row["version"]), float(row["t_end"])
            for column, tag in (SCALARS | {"eval_metric": f"eval/{metric}"}).items():
                value = row.get(column)
                if value is not None and pd.notna(value):
                    writer.add_scalar(tag, float(value), global_step=step, walltime=when)
    finally:
        writer.close()
    return folder
