"""Which client host each virtual client runs on, and when one moves to even out a round.

A client starts on host `client % hosts`. In sync and semi-sync rounds, where every host waits for the round's
slowest, a client moves, whole, to the least loaded host between two of its iterations, so that each host runs
about an even share of the round's steps, as McNaughton's wrap-around schedule would (5 clients x 10 steps on 2
hosts: 25 and 25 instead of 30 and 20; no host more than ceil(steps / hosts) or one session's, tested). Steps are
counted, not timed, so where a client runs is the same in every run; what it computes never depends on where it
runs.
"""

from __future__ import annotations


class Placement:
    """Where each client is and each host's step count this round; `step` says when a client moves first."""

    def __init__(self, hosts: int, iterations: int = 0):
        self.hosts = hosts
        self.iterations = iterations  # a session's iterations; 0: clients never move
        self.moved: dict[int, int] = {}  # client -> the host it moved to
        self.work = [0] * hosts  # steps each host was given since the last aggregation
        self.steps = [0] * hosts  # client forwards each host ran (replays after a fault included)
        self.moves = 0

    def where(self, client: int) -> int:
        return self.moved.get(client, client % self.hosts)

    def begin(self, client: int) -> None:
        """A session starts: its steps are its host's."""
        self.work[self.where(client)] += self.iterations

    def step(self, client: int, iteration: int) -> tuple[int, int] | None:
        """Client `client` is about to run `iteration`: (from, to) when it moves first, else None."""
        move = self._move(client, iteration)
        self.steps[self.where(client)] += 1
        return move

    def _move(self, client: int, iteration: int) -> tuple[int, int] | None:
        if not self.iterations or self.hosts < 2:
            return None
        h, left = self.where(client), self.iterations - iteration
        share = -(-sum(self.work) // self.hosts)
        g = min(range(self.hosts), key=lambda j: (self.work[j], j))
        if g == h or not self.should_move(h, g, left, share):
            return None
        self.moved[client] = g
        self.work[h] -= left
        self.work[g] += left
        self.moves += 1
        return h, g

    def should_move(self, h: int, g: int, left: int, share: int) -> bool:
        """From host `h` to the least loaded `g` with `left` steps of the session to go, when `g` is below an even
        share of the round's steps and those steps are at most `h`'s excess over it: `h` then lands on its share,
        where McNaughton's wrap-around would cut. What overloads the receiver is passed on the same way, a chain
        (16 clients on 15 hosts: 9 moves, at most 11 steps in 10, not 20); 5 clients on 2 hosts move once a
        round. Never from a host with one session's steps or fewer (a client alone would only carry its wait)."""
        return self.work[h] > max(share, self.iterations) and left <= self.work[h] - share and self.work[g] < share

    def new_round(self) -> None:
        """An aggregation: the next round's steps are counted afresh."""
        self.work = [0] * self.hosts

    def restore(self, moved: dict[int, int]) -> None:
        """Clients where a recovery point had them (a host index beyond this run's hosts, on a resume with fewer
        actors, falls back to the default)."""
        self.moved = {c: h for c, h in moved.items() if h < self.hosts}
        self.new_round()

    def by_host(self, clients) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for c in clients:
            out.setdefault(self.where(c), []).append(c)
        return out
