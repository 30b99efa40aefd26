"""Python's cyclic garbage collector, paused where it only costs time: importing torch, transformers and peft
(a fifth of the import time goes to collections that find next to nothing) and `plan`'s simulation (each full
collection walks every live session and event). Neither makes reference cycles that need collecting meanwhile."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off inside, and afterwards as it was (a caller who had it off keeps it off)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
