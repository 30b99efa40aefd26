"""The cluster state fault recovery reads, in one place. Ray's public state API (`ray.util.state`) needs the
dashboard, which runs start without; what it offers otherwise is private (`ray._private.state`) and may move in a
Ray upgrade. tests/test_run.py::test_the_ray_state_recovery_reads_is_where_it_was checks both calls against the
installed Ray, so an upgrade that moves them fails there, loudly, not in the middle of a recovery."""

from __future__ import annotations

from typing import Any

import ray


def live_nodes() -> list[str]:
    """IDs of the nodes Ray reports alive, sorted (a lost node stays listed, not alive, for a while)."""
    return sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])


def actor_id(actor: Any) -> str:
    """An actor handle's ID (hex), as Ray's errors name it."""
    return actor._actor_id.hex()


def actor_info(actor: Any) -> tuple[str | None, str | None]:
    """(state, node ID) of an actor as the GCS knows it: state `ALIVE`, `RESTARTING`, `DEAD`, ...; None when
    unknown."""
    from ray._private import state

    info = state.actors(actor_id(actor)) or {}
    return info.get("State"), (info.get("Address") or {}).get("NodeID") or None
