"""Rules for moving clients between client actors, compared on step counts (no training): every case of 1-40
clients, 1-16 hosts, 1-12 iterations, the clients stepping in turn as in a sync round of equal devices. For each
rule: the share of cases where no host runs more than the bound max(iterations, ceil(steps / hosts)), the worst
ratio to it, the moves in all, and three cases in detail. The kept rule is `training/placement.py` itself.

    python bench/placement_rules.py
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hsplit_actors.training.placement import Placement  # noqa: E402


def fits(work: list[int], h: int, g: int, left: int, share: int, iterations: int) -> bool:
    """Move what fits in the other's share (the first rule)."""
    return work[h] > max(share, iterations) and work[g] + left <= share


def pair_maximum(work: list[int], h: int, g: int, left: int, share: int, iterations: int) -> bool:
    """Move whenever the busier of the two hosts' counts falls (the second rule)."""
    return work[h] > iterations and work[g] + left < work[h]


class Rule(Placement):
    """Placement with another move condition."""

    def __init__(self, hosts: int, iterations: int, condition):
        super().__init__(hosts, iterations)
        self.condition = condition

    def should_move(self, h: int, g: int, left: int, share: int) -> bool:
        return self.condition(self.work, h, g, left, share, self.iterations)


def round_of(placement: Placement, clients: int, iterations: int) -> Placement:
    for c in range(clients):
        placement.begin(c)
    for it in range(iterations):
        for c in range(clients):
            placement.step(c, it)
    return placement


def main() -> None:
    rules = {"move what fits in the other's share": lambda n, k: Rule(n, k, fits),
             "move when the pair's maximum falls": lambda n, k: Rule(n, k, pair_maximum),
             "kept (training/placement.py)": Placement}
    detail = [(5, 2, 10), (5, 2, 40), (16, 15, 10)]
    for name, make in rules.items():
        at_bound = cases = moves = 0
        worst = 1.0
        for clients, hosts, iterations in itertools.product(range(1, 41), range(1, 17), range(1, 13)):
            p = round_of(make(hosts, iterations), clients, iterations)
            bound = max(iterations, -(-clients * iterations // hosts))
            worst = max(worst, max(p.steps) / bound)
            at_bound += max(p.steps) <= bound
            cases += 1
            moves += p.moves
        shown = "; ".join(f"{c}x{k} on {n}: max {max(p.steps)} steps, {p.moves} moves"
                          for c, n, k in detail for p in [round_of(make(n, k), c, k)])
        print(f"{name}: at the bound in {at_bound / cases:.1%} of {cases} cases (worst {worst:.2f}x), "
              f"{moves} moves; {shown}")


if __name__ == "__main__":
    main()
