"""hsplit-actors: HSplitLoRA (heterogeneous split LoRA fine-tuning) as a virtual-clock, actor-based simulation.

    from hsplit_actors import plan, run, compare, validate, read_run, export

Names are imported on first use, so `import hsplit_actors` (and the `hsplit` command) starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_PUBLIC = {
    "plan": "hsplit_actors.api", "run": "hsplit_actors.api", "compare": "hsplit_actors.api",
    "validate": "hsplit_actors.api", "read_run": "hsplit_actors.api", "Run": "hsplit_actors.api",
    "Comparison": "hsplit_actors.api", "export": "hsplit_actors.exporting", "Scenario": "hsplit_actors.scenario.schema",
    "Progress": "hsplit_actors.engine", "ScenarioError": "hsplit_actors.errors", "Interrupted": "hsplit_actors.errors",
}
__all__ = ["Comparison", "Interrupted", "Progress", "Run", "Scenario", "ScenarioError", "compare", "export", "plan",
           "read_run", "run", "validate"]

if TYPE_CHECKING:
    from hsplit_actors.api import Comparison, Run, compare, plan, read_run, run, validate
    from hsplit_actors.engine import Progress
    from hsplit_actors.errors import Interrupted, ScenarioError
    from hsplit_actors.exporting import export
    from hsplit_actors.scenario.schema import Scenario


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hsplit_actors' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
