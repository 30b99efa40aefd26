"""Staleness weights w(s) for an update computed on a global version `s` aggregations old (SPEC §9).

constant    1
polynomial  1 / (1 + s)^a                      (FedBuff, FedAsync; a = 0.5 by default)
hinge       1 while s <= b, else 1 / (a (s - b) + 1)   (FedAsync; a = 10, b = 4 by default)
"""

from __future__ import annotations

from collections.abc import Callable

DEFAULT_A = {"polynomial": 0.5, "hinge": 10.0}


def staleness_weight(kind: str, a: float | None = None, b: int = 4) -> Callable[[int], float]:
    """The function s -> w(s) for a scenario's `aggregation.staleness`."""
    if kind == "constant":
        return lambda s: 1.0
    a = DEFAULT_A[kind] if a is None else a
    if kind == "polynomial":
        def polynomial(s: int) -> float:
            try:
                return 1.0 / (1.0 + s) ** a
            except OverflowError:  # (1 + s)^a beyond a float (a: 1e300): the weight is 0 to double precision
                return 0.0

        return polynomial
    if kind == "hinge":
        return lambda s: 1.0 if s <= b else 1.0 / (a * (s - b) + 1.0)
    raise ValueError(f"unknown staleness weighting {kind!r}")
