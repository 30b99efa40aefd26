"""`semi_sync`: rounds that close `deadline_s` after they start, or once `min_updates` arrived; late clients stop
(`late: drop`) or their update joins the next aggregation, staleness-weighted (`late: carry`)."""

from __future__ import annotations

import math
import time

from hsplit_actors.engine.schedules.base import Schedule, register
from hsplit_actors.engine.session import Session


@register("semi_sync")
class SemiSync(Schedule):
    def process(self):
        engine, env, sc, spec = self.engine, self.engine.env, self.engine.scenario, self.spec
        carry = spec.late == "carry"
        carried: list[Session] = []  # late updates of earlier rounds, for the next aggregation
        for rnd in range(sc.rounds):
            t_start, wall_start = env.now, time.perf_counter()
            self.position = rnd
            participants = engine.participants(rnd)
            engine.begin_progress(len(participants))
            pending = {engine.start_session(c, rnd, True).sid for c in participants.tolist()}
            need = min(spec.min_updates or len(pending), len(pending))
            deadline = t_start + spec.deadline_s if spec.deadline_s else math.inf
            arrived: list[Session] = []
            while pending and len(arrived) < need:
                s = yield from self.next_upload(deadline)
                if s is None:
                    break
                if s.sid in pending:
                    pending.discard(s.sid)
                    if s.outcome == "update":
                        arrived.append(s)
                elif s.outcome == "update":  # an earlier round's late client
                    (carried.append if carry else engine.discard)(s)
            for sid in pending:  # late: told to stop (drop), or left to finish and join a later aggregation
                if not carry:
                    engine.running[sid].stop = True
            limit = spec.max_staleness
            updates = []
            for s in carried + arrived:
                if limit is not None and engine.version - s.version > limit:
                    engine.discard(s)
                else:
                    updates.append(s)
            carried = []
            yield from self.close(rnd, t_start, wall_start, len(participants), updates)
            self.stop_stale()
        engine.finished.succeed()
