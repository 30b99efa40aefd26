"""Data sets shipped in the repository's data/ folder (see data/SOURCES.md for origin and licence)."""

from __future__ import annotations

import os
from pathlib import Path

# The repository copy; HSPLIT_DATA_DIR points elsewhere (e.g. an installed package without the repo).
DATA_DIR = Path(os.environ.get("HSPLIT_DATA_DIR", Path(__file__).resolve().parents[2] / "data"))

# Meaning-representation attributes of E2E, any of which can drive a Dirichlet partition.
E2E_ATTRIBUTES = ("name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near")

# The file each data set trains from, relative to its folder.
TRAIN_FILES = {"sst2": "sst2/train.tsv", "e2e": "e2e/devset.csv"}


class DataShareWarning(UserWarning):
    """The fleet asks for more samples than the training file holds; each client gets fewer."""


class TruncatedTextWarning(UserWarning):
    """data.seq_len ends some E2E samples before their text begins: they have nothing to learn or score."""


def train_file(dataset: str, path: str | None = None) -> Path | None:
    """Where a data set's training file is: `path` when the scenario gives one, else the repository copy."""
    if dataset not in TRAIN_FILES:
        return None
    return Path(path) if path else DATA_DIR / TRAIN_FILES[dataset]


def training_rows(dataset: str, path: Path) -> int:
    """How many samples a training file holds, counted without parsing them (validation stays fast): SST-2 is
    one line per sample after a header; E2E is CSV (a quoted field may span lines)."""
    import csv

    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        if dataset == "sst2":
            return max(sum(1 for _ in f) - 1, 0)
        return max(sum(1 for _ in csv.reader(f)) - 1, 0)


def require_real_data(dataset: str) -> None:
    """Real training needs real samples; checked before a run starts anything."""
    if dataset not in TRAIN_FILES:
        from hsplit_actors.errors import ScenarioError

        raise ScenarioError(f"hsplit run trains on real data; set data.dataset to {' or '.join(TRAIN_FILES)}",
                            field="data.dataset")
