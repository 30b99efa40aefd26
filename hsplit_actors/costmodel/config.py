"""A client's split-LoRA configuration: its split point and a LoRA rank for every (block, matrix)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hsplit_actors.costmodel.arch import ModelArch


@dataclass(frozen=True)
class ClientConfig:
    """`split_point` blocks on the device (`n_layers`: federated, head included; 0: all on the server).

    `ranks[b][j]` is the LoRA rank of matrix `arch.matrices[j]` in block `b` (0-based); 0 means no adapter.
    Frozen and hashable, so costs are computed once per distinct configuration, not once per client.
    """

    split_point: int
    ranks: tuple[tuple[int, ...], ...]

    @classmethod
    def uniform(cls, arch: ModelArch, split_point: int, rank: int, targets: Iterable[str]) -> ClientConfig:
        """The same rank on the `targets` matrices of every block (the usual LoRA set-up)."""
        chosen = set(targets)
        unknown = chosen - set(arch.matrices)
        if unknown:
            raise KeyError(f"{sorted(unknown)} not in {list(arch.matrices)}")
        row = tuple(rank if m in chosen else 0 for m in arch.matrices)
        return cls(split_point, tuple(row for _ in range(arch.n_layers)))

    @classmethod
    def from_pattern(cls, arch: ModelArch, split_point: int, pattern: Mapping[tuple[int, str], int]) -> ClientConfig:
        """Ranks from a {(block, matrix): rank} mapping; missing entries are 0."""
        index = {m: j for j, m in enumerate(arch.matrices)}
        rows = [[0] * len(arch.matrices) for _ in range(arch.n_layers)]
        for (block, matrix), rank in pattern.items():
            rows[block][index[matrix]] = rank
        return cls(split_point, tuple(tuple(r) for r in rows))

    def pattern(self, arch: ModelArch) -> dict[str, list[int]]:
        """Ranks per matrix name, one entry per block: the form written to the clients table."""
        return {m: [row[j] for row in self.ranks] for j, m in enumerate(arch.matrices)}
