"""Where a training run's time goes as client actors are added (issue 22): a client-heavy 16-client run (split
after block 3 of 4, so most compute is on the devices) with 1, 2, 4, ... client actors, each count in a fresh
process with a fresh local Ray.

Reported per actor count: the training part of the run (the rounds, `train_s`) and its speed-up over one actor;
the busiest client actor's and the server actor's busy seconds (time inside their steps, from the hosts
themselves); evaluation (the rounds' evaluation at the server, measured by the server actor); and what is left
on the critical path, `train_s` minus the busiest host: the coordinator's own work (the SimPy clock, one call per
phase, waiting for results) and the object transfers between actors. Tables (events, rounds less wall time,
clients) must be identical at every count: results do not depend on placement.

On this 2-core machine only the 1- and 2-actor points mean anything (one core is the coordinator's and the
server's); on a many-core machine pass e.g. --actors 1,2,4,8,15.

    python bench/actor_scaling.py [--actors 1,2] [--clients 16] [--rounds 2] [--iterations 10] [--balance both]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHILD = """
import json, sys, tempfile, time
import yaml
sys.path.insert(0, sys.argv[2])
from cluster_scaling import digest
from hsplit_actors.scenario import parse_scenario
from hsplit_actors.training.run import run
raw = json.loads(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    directory, tables, extra = run(parse_scenario(yaml.safe_dump(raw)), tmp + "/run")
    wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "train_s": extra["train_s"], "startup_s": extra["startup_s"],
                  "busy": extra["host_busy_s"], "steps": extra["client_host_steps"], "digest": digest(tables)}))
"""


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from cluster_scaling import arguments, child, scenario

    args = arguments("actors", "1,2", 16, balance=True)
    print(f"{'actors':>6} {'moving':>6} {'train s':>8} {'speed-up':>8} {'busiest client s':>16} {'server s':>8} "
          f"{'eval s':>6} {'rest of path s':>14} {'start-up s':>10} {'steps per actor':>16} {'tables = 1 actor':>16}")
    base = None
    for n in (int(x) for x in args.actors.split(",")):
        for balance in {"on": [True], "off": [False], "both": [True, False]}[args.balance]:
            if n == 1 and not balance and base is not None:
                continue  # one actor: nothing to move
            raw = scenario(args.clients, args.rounds, args.iterations, n)
            raw["train"]["balance"] = balance
            r = child(CHILD, json.dumps(raw), str(Path(__file__).parent))
            base = base or r
            busiest = max(sum(host.values()) for host in r["busy"]["client_hosts"])
            server = sum(r["busy"]["server"].values())
            evaluation = r["busy"]["server"].get("evaluate", 0.0)
            rest = r["train_s"] - max(busiest, server)
            steps = "/".join(str(s) for s in r["steps"])
            print(f"{n:>6} {'yes' if balance else 'no':>6} {r['train_s']:>8.1f} {base['train_s'] / r['train_s']:>8.2f} "
                  f"{busiest:>16.1f} {server:>8.1f} {evaluation:>6.1f} {rest:>14.1f} "
                  f"{r['startup_s']:>10.1f} {steps:>16} {str(r['digest'] == base['digest']):>16}", flush=True)


if __name__ == "__main__":
    main()
