"""Recovery points: everything needed to continue a run from an aggregation, whatever was in flight. Taken after
every aggregation (once every submitted step has finished), used to restore hosts after a fault (then the calls
logged since are replayed) and written as the checkpoint that `--resume` continues from.

One structure holds it all. Hosts are asked only for the clients whose state changed since the last point (the
others are carried over), so the cost follows the work, not the fleet. A client in the middle of an iteration
is captured with its batch (its graph is recomputed on restore) and the activations or gradient in transit.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RecoveryPoint:
    clients: dict[int, dict] = field(default_factory=dict)  # client -> its host's snapshot of it
    server_states: dict = field(default_factory=dict)  # owner (client, or -1: the shared set) -> adapter state
    server_split_points: dict = field(default_factory=dict)
    server_scores: dict = field(default_factory=dict)  # IWI scores the server holds for sessions in flight
    merges: list = field(default_factory=list)  # (version, low-rank aggregate) folded into the base, in order
    global_at: dict = field(default_factory=dict)  # version -> (factors, head) still needed
    version: int = 0
    loaded: dict = field(default_factory=dict)  # client -> (version, configuration) its host holds
    registered: set = field(default_factory=set)
    split_point: dict = field(default_factory=dict)
    in_flight: dict = field(default_factory=dict)  # client -> {"forward": payload} or {"gradient": tensor}
    placement: dict = field(default_factory=dict)  # client -> the host it moved to (placement.py)

    def copy(self) -> RecoveryPoint:
        return RecoveryPoint(dict(self.clients), dict(self.server_states), dict(self.server_split_points),
                             dict(self.server_scores), list(self.merges), dict(self.global_at), self.version,
                             dict(self.loaded), set(self.registered), dict(self.split_point), dict(self.in_flight),
                             dict(self.placement))


def capture(ex, known: RecoveryPoint) -> RecoveryPoint:
    """Update `known` with the hosts' current state of every changed client and the server; returns a copy."""
    rt = ex.rt
    changed = sorted(ex.changed)
    parts = rt.get([rt.call(ex.client_hosts[h], "snapshot", cs) for h, cs in ex.placement.by_host(changed).items()])
    for part in parts:
        known.clients.update(part)
    server = rt.get(rt.call(ex.server, "snapshot", changed))
    for owner, state in server["states"].items():
        if state is None:
            known.server_states.pop(owner, None)
        else:
            known.server_states[owner] = state
    known.server_split_points, known.server_scores = server["split_points"], server["scores"]
    known.merges, known.global_at, known.version = list(ex.merges), dict(ex.global_at), ex.version
    known.loaded, known.registered, known.split_point = dict(ex.loaded), set(ex.registered), dict(ex.split_point)
    known.placement = dict(ex.placement.moved)
    forwards = {c: rt.get(ref) for c, ref in ex.forward_out.items()}
    gradients = {c: rt.get(ref) for c, ref in ex.gradients.items()}
    known.in_flight = {c: {"forward": v} for c, v in forwards.items()} | {c: {"gradient": v}
                                                                           for c, v in gradients.items()}
    ex.changed.clear()
    return known.copy()


def restore(ex, point: RecoveryPoint) -> None:
    """Every host and the executor as they were at `point`."""
    rt = ex.rt
    ex.placement.restore(getattr(point, "placement", None) or {})  # none in a checkpoint from before clients moved
    live = tuple(sorted(point.global_at))  # versions sessions still compute on
    where = ex.placement.by_host(point.clients)
    calls = [rt.call(host, "restore", {c: point.clients[c] for c in where.get(h, [])}, point.merges, live)
             for h, host in enumerate(ex.client_hosts)]
    calls.append(rt.call(ex.server, "restore", {"states": point.server_states,
                                                "split_points": point.server_split_points,
                                                "scores": point.server_scores}, point.merges))
    rt.get(calls)
    ex.merges, ex.global_at, ex.version = list(point.merges), dict(point.global_at), point.version
    ex.factors, ex.head = ex.global_at[ex.version]
    ex.loaded, ex.registered, ex.split_point = dict(point.loaded), set(point.registered), dict(point.split_point)
    ex.forward_out = {c: v["forward"] for c, v in point.in_flight.items() if "forward" in v}
    ex.gradients = {c: v["gradient"] for c, v in point.in_flight.items() if "gradient" in v}
    ex.last_step.clear()
    ex.steps, ex.losses = [], []
    ex.changed.clear()
    ex.known = point.copy()
