"""*When* updates are aggregated (SPEC §9): one schedule per `aggregation.mode`, each in its own module and
registered by name; `base.py` holds what they share and the narrow `Engine` interface they drive."""

from hsplit_actors.engine.schedules.base import SCHEDULES, Engine, Schedule, register, schedule_for
from hsplit_actors.engine.schedules.fedbuff import Async, NobodyAvailableWarning
from hsplit_actors.engine.schedules.semi_sync import SemiSync
from hsplit_actors.engine.schedules.sync import Sync

__all__ = ["SCHEDULES", "Async", "Engine", "NobodyAvailableWarning", "Schedule", "SemiSync", "Sync", "register",
           "schedule_for"]
