"""A training run's wall time on a local multi-node Ray cluster (issue 22), with its placement and a check that
the tables do not depend on it.

For each node count N: a `ray.cluster_utils.Cluster` of N nodes of 1 CPU each on this machine (the head and N-1
workers), `hsplit run --address` onto it with N client actors (round-robin: one per node; the coordinator and
the server actor stay on the head node). Each N runs in a fresh process. Reported: the whole call's wall time,
its training part (the rounds) and start-up (Ray, actors, model and data set-up), how many client actors sat on
each node, and whether events / rounds / clients (less wall time) equal the one-node run's bit for bit.

On this 2-core machine the nodes share two cores, so more than two nodes cannot be faster; what the figures show
is the cost of spreading a run over nodes (object transfers through the object store, remote calls) and that the
results stay identical. On a real cluster each node brings its own cores.

    python bench/cluster_scaling.py [--nodes 1,2,4] [--clients 8] [--rounds 2] [--iterations 10]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time
import yaml
start = time.perf_counter()
from ray.cluster_utils import Cluster
n = int(sys.argv[2])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
for _ in range(n - 1):
    cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
cluster_s = time.perf_counter() - start
import ray
from hsplit_actors.scenario import parse_scenario
from hsplit_actors.training.run import run
sys.path.insert(0, sys.argv[4])
from cluster_scaling import digest
raw = json.loads(sys.argv[1])
t0 = time.perf_counter()
directory, tables, extra = run(parse_scenario(yaml.safe_dump(raw)), sys.argv[3], address=cluster.address)
wall = time.perf_counter() - t0
print(json.dumps({"nodes": n, "cluster_s": cluster_s, "wall_s": wall, "train_s": extra["train_s"],
                  "startup_s": extra["startup_s"], "placement": extra["client_host_nodes"], "digest": digest(tables),
                  "busy": extra["host_busy_s"],
                  "final_loss": float(tables.rounds["train_loss"].iloc[-1])}))
ray.shutdown()
cluster.shutdown()
"""


def scenario(clients: int, rounds: int, iterations: int, actors: int) -> dict:
    """A client-heavy run: split after block 3 of 4, so most compute is on the client actors."""
    return {
        "name": "cluster_scaling", "seed": 0,
        "model": {"preset": "minilm-l6", "weights": "random",
                  "overrides": {"num_hidden_layers": 4, "hidden_size": 128, "intermediate_size": 512,
                                "num_attention_heads": 4}},
        "data": {"dataset": "sst2", "batch_size": 16, "seq_len": 48, "samples_per_client": 160},
        "fleet": [{"profile": "jetson_nano", "count": clients}],
        "method": {"name": "splitlora", "split_point": 3, "rank": 4},
        "rounds": rounds, "local_iterations": iterations, "progress": False,
        "train": {"eval_samples": 64, "lr": 0.001, "actors": actors, "checkpoint": False, "export": False},
    }


def digest(tables) -> str:
    """Every number and label of events, rounds (less wall time) and clients."""
    h = hashlib.sha256()
    for frame in (tables.events, tables.rounds.drop(columns=["wall_s"]), tables.clients):
        for name in frame.columns:
            values = frame[name].to_numpy()
            h.update(name.encode())
            h.update(values.astype(np.float64).tobytes() if values.dtype.kind in "fiub"
                     else "\x1f".join(map(str, values)).encode())
    return h.hexdigest()


def arguments(counts: str, default: str, clients: int, balance: bool = False) -> argparse.Namespace:
    """The benches' common options: the counts to try, the fleet and the run's length (and, for actors, whether
    clients move between them: train.balance on, off or both side by side)."""
    parser = argparse.ArgumentParser()
    parser.add_argument(f"--{counts}", default=default)
    parser.add_argument("--clients", type=int, default=clients)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=10)
    if balance:
        parser.add_argument("--balance", choices=["on", "off", "both"], default="on")
    return parser.parse_args()


def child(code: str, *argv: str) -> dict:
    """Run `code` in a fresh interpreter (its own Ray) and return the JSON it prints last."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    args = arguments("nodes", "1,2,4", 8)
    print(f"{'nodes':>5} {'actors':>6} {'wall s':>7} {'train s':>8} {'start-up s':>10} {'cluster s':>9} "
          f"{'actors per node':>16} {'tables = 1 node':>15}")
    first = None
    for n in (int(x) for x in args.nodes.split(",")):
        raw = scenario(args.clients, args.rounds, args.iterations, n)
        with tempfile.TemporaryDirectory() as tmp:
            r = child(CHILD, json.dumps(raw), str(n), str(Path(tmp) / "run"), str(Path(__file__).parent))
        first = first or r["digest"]
        per_node = sorted((r["placement"].count(x) for x in set(r["placement"])), reverse=True)
        print(f"{n:>5} {n:>6} {r['wall_s']:>7.1f} {r['train_s']:>8.1f} {r['startup_s']:>10.1f} "
              f"{r['cluster_s']:>9.1f} {str(per_node):>16} {str(r['digest'] == first):>15}", flush=True)


if __name__ == "__main__":
    main()
