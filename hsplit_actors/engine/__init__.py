"""The SimPy engine: one generator per client and round walks SPEC §1's phases; an executor does the real work."""

from hsplit_actors.engine.executor import Executor, TimingExecutor
from hsplit_actors.engine.sim import Progress, ProgressCallback, Session, Simulation, SimulationLog

__all__ = ["Executor", "Progress", "ProgressCallback", "Session", "Simulation", "SimulationLog", "TimingExecutor"]
