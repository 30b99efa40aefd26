"""A client's session and the phases it is recorded in: what the simulation and the aggregation schedules share
(kept apart from both, so neither imports the other)."""

from __future__ import annotations

from dataclasses import dataclass

PHASES = ("client_fwd", "uplink", "queue", "server", "downlink", "client_bwd")
OTHER_PHASES = ("agg_up", "aggregate", "agg_down", "dropout", "discarded")
AGG_UP, AGGREGATE, AGG_DOWN, DROPOUT, DISCARDED = range(len(PHASES), len(PHASES) + len(OTHER_PHASES))
ALL_PHASES = PHASES + OTHER_PHASES
FED_SERVER = -1  # `client` of the aggregation event


@dataclass(eq=False, slots=True)
class Session:
    """One client's stint of local training: from the version it downloaded to the update it uploads."""

    sid: int  # dispatch order, unique in the run
    client: int
    number: int  # the client's own count of sessions: seeds its computation, whatever the mode
    version: int  # the global version it trains on
    config_id: int
    round: int  # sync / semi_sync: the round it was drawn for; async: -1 (the aggregation that takes it, later)
    uploads: bool  # a sync round that does not aggregate ends without an upload
    down_bytes: int
    up_bytes: int
    stop: bool = False  # told to stop at its next iteration (too stale, or late under `late: drop`)
    outcome: str = ""  # update | done | dropout | stopped
    pending: tuple | None = None  # `plan`'s chained session: its finished iteration (boundaries, iteration, queue)


@dataclass(frozen=True, slots=True)
class Update:
    """An update going into an aggregation: its session, how many versions it is behind and its staleness
    weight w(staleness) (1 when fresh). The server rate multiplies it in one place, the executor."""

    session: Session
    staleness: int
    weight: float
