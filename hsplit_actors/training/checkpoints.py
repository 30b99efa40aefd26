"""Checkpoint files: `checkpoints/round_NNNN.pt`, one per aggregation (NNNN: its row's round; in async the
aggregation's index), written atomically; the newest is what `--resume` continues from."""

from __future__ import annotations

from pathlib import Path


def save_checkpoint(directory, round_: int, version: int, state, metrics: dict, strategy: dict,
                    keep: int | None = None) -> None:
    """Each file holds the recovery point after aggregation `version`, every aggregation's metrics and what the
    strategy had learned after each. With `keep`, only the newest `keep` files stay (each holds the whole run
    so far; older ones are only history)."""
    import torch

    directory = Path(directory)
    directory.mkdir(exist_ok=True)  # never its parent: a run directory removed meanwhile is not recreated
    tmp = directory / f".round_{round_:04d}.pt.tmp"
    torch.save({"round": round_, "version": version, "state": state, "metrics": dict(metrics),
                "strategy": dict(strategy)}, tmp)
    tmp.rename(directory / f"round_{round_:04d}.pt")
    if keep is not None:
        for old in sorted(directory.glob("round_*.pt"))[:-keep]:
            old.unlink()


def load_checkpoint(directory) -> dict | None:
    import torch

    files = sorted(Path(directory).glob("round_*.pt"))
    return torch.load(files[-1], weights_only=False, map_location="cpu") if files else None
