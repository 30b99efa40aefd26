"""`sync`: rounds; every round's participants end before the next round starts; aggregate every `interval`
rounds (and after the last). Between aggregations clients keep their adapters and optimiser state."""

from __future__ import annotations

import time

from hsplit_actors.engine.schedules.base import Schedule, register


@register("sync")
class Sync(Schedule):
    stops_sessions = False  # every participant runs its session to the end

    def process(self):
        engine, env, sc = self.engine, self.engine.env, self.engine.scenario
        every = self.spec.every
        for rnd in range(sc.rounds):
            t_start, wall_start = env.now, time.perf_counter()
            self.position = rnd
            participants = engine.participants(rnd)
            aggregate = (rnd + 1) % every == 0 or rnd == sc.rounds - 1
            engine.begin_progress(len(participants))
            for c in participants.tolist():
                engine.start_session(c, rnd, aggregate)
            updates = []
            for _ in range(len(participants)):
                s = yield engine.uploads.get()
                if s.outcome == "update":
                    updates.append(s)
            yield from self.close(rnd, t_start, wall_start, len(participants), updates, aggregate)
        engine.finished.succeed()
