"""The virtual clock: SimPy's environment plus the two things the engine's hot loop needs and SimPy lacks.

- `at(time)`: an event at an exact instant. A timeout lands on `now + delay`, which can round past the instant
  two chained phases reach; merged phases must land on it bit for bit.
- `at(time, after=start)`: the event waits in a FIFO outside SimPy's heap until the clock reaches `start`. A
  server job's end is known on arrival, but with a million clients queued for the GPUs, a heap holding all
  their ends makes every pop slower (cache misses grow with its size); parked in start order they cost nothing.

Both build SimPy's own heap entry, `(time, priority, id, event)`, with the id taken when the event is created,
exactly as a `Timeout` does: events at one instant keep the order they were created in. This reaches into
SimPy's environment (`_queue`, `_eid`, `_now`) and `step`, as written in simpy 4.1.2, which pyproject pins.

- `wake(waker, time)`: the same heap entry with a `Waker` in the event's place, called back directly. `plan`'s
  chained sessions (`engine/chained.py`) advance this way: no event object, no generator to resume.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush

import simpy
from simpy.core import EmptySchedule, StopSimulation
from simpy.events import NORMAL, URGENT


class At(simpy.Event):
    """A triggered event that fires at `time` (a `Timeout` given the instant instead of the delay)."""

    def __init__(self, clock: Clock, time: float, after: float):
        self.env = clock
        self.callbacks = []
        self._value = None
        self._ok = True
        now, parked = clock._now, clock.parked
        if time < now or time < after:
            raise ValueError(f"an event at {time} cannot fire before now ({now}) or its start ({after})")
        entry = (time, NORMAL, next(clock._eid), self)
        if after > now:
            if parked and after < parked[-1][0]:  # the FIFO would hold it back past its instant
                raise ValueError(f"parked until {after}, before the last parked start {parked[-1][0]}")
            parked.append((after, entry))
        else:
            heappush(clock._queue, entry)


class Waker:
    """What the clock calls back (`wake()`) at an instant instead of firing an event: nothing can wait on it."""

    __slots__ = ()

    def wake(self) -> None:
        raise NotImplementedError


class Clock(simpy.Environment):
    """`simpy.Environment` whose `step` first moves parked events due by the next instant into the heap."""

    def __init__(self, initial_time: float = 0.0):
        super().__init__(initial_time)
        self.parked: deque[tuple[float, tuple]] = deque()  # (after, heap entry), `after` never decreasing

    def at(self, time: float, after: float = -1.0) -> At:
        """An event at exactly `time` (>= now). With `after` ahead of the clock it is parked until then; callers
        park in non-decreasing `after`, and `time >= after`, so a parked event is never due before it moves."""
        return At(self, time, after)

    def wake(self, waker: Waker, time: float, after: float = -1.0, priority: int = NORMAL) -> None:
        """Call `waker.wake()` at exactly `time`, in the order an event created now would fire (`at`'s rules)."""
        now, parked = self._now, self.parked
        if time < now or time < after:
            raise ValueError(f"a wake-up at {time} cannot come before now ({now}) or its start ({after})")
        entry = (time, priority, next(self._eid), waker)
        if after > now:
            if parked and after < parked[-1][0]:
                raise ValueError(f"parked until {after}, before the last parked start {parked[-1][0]}")
            parked.append((after, entry))
        else:
            heappush(self._queue, entry)

    def step(self) -> None:
        """SimPy 4.1's `Environment.step`, with parked events due by the heap's next instant moved in first
        (written out rather than calling it: this runs once per event, millions of times)."""
        queue, parked = self._queue, self.parked
        while parked and (not queue or parked[0][0] <= queue[0][0]):
            heappush(queue, parked.popleft()[1])
        try:
            self._now, _, _, event = heappop(queue)
        except IndexError:
            raise EmptySchedule from None
        if isinstance(event, Waker):
            event.wake()
            return
        callbacks, event.callbacks = event.callbacks, None
        try:
            for callback in callbacks:
                callback(event)
        except StopSimulation:  # `run(until=...)`: keep the remaining callbacks for a later run, as SimPy does
            event.callbacks = callbacks[callbacks.index(callback) + 1:]
            self.schedule(event, URGENT - 1)
            raise
        if not event._ok and not hasattr(event, "_defused"):  # a failed event nobody handled: crash, as SimPy does
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc
