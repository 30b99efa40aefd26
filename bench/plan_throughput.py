"""Engine throughput vs bare SimPy loops at the same instants (issue 2's benchmark; async added in issue 10).

For each fleet size N (1k, 10k, 100k clients x 10 iterations, one round with aggregation), up to four runs, each
in a fresh subprocess so its peak RSS is its own:
  engine        `hsplit plan`'s path: fleet, strategy, SimPy processes (a split session under FIFO: a callback the
                clock wakes, engine/chained.py), bookkeeping, tables, Parquet writing
  bare-reserve  the instants of the engine under FIFO and nothing else, as plain SimPy processes: a GPU reserved
                on arrival, the iteration's end parked until its start and chained with the next uplink; the
                like-for-like baseline (one generator per client, as a SimPy user writes it)
  bare-heap     requests waiting in the engine's heap pool (the path of other disciplines and of `run`)
  bare-simpy    the same with simpy.Resource as the server
The bare loops get the engine's per-client durations, so in sync all must end at the same virtual time (checked).
With `--aggregation async` (FedBuff: C = N/2 clients training, an aggregation every K = C/4 arrivals, 2N/K
aggregations, so about 2N sessions; `--passes 1`: N/K aggregations, about one session per client) the bare loops
keep C slots that each take the next idle client from a queue and an aggregator that waits for K uploads; the
engine draws idle clients at random (seeded), so the two visit clients in another order and their virtual end
times differ: only the rates are compared, over the same number of aggregations (client-iterations within a few
percent, printed).
Each child first does a small warm-up run (200 clients) so one-time imports are not timed; peak RSS includes it.
Sizes up to 10k report the best of 3 runs (sub-second runs are noisy on a shared 2-core machine), 100k one run.

    python bench/plan_throughput.py [--sizes 1000,10000,100000] [--iterations 10] [--aggregation sync|async]
                                    [--passes 2]
                                    [--events phase|iteration|none]
                                    [--modes engine,bare-reserve,bare-heap,bare-simpy]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SCENARIO = {
    "name": "bench", "seed": 0,
    "model": {"preset": "gpt2-small"},
    "data": {"dataset": "synthetic", "batch_size": 4, "seq_len": 64},
    "fleet": [{"profile": {"choice": {"phone_sd8gen2": 4, "jetson_nano": 1, "orin_nano": 2, "laptop_rtx3060": 1}},
               "count": 0, "memory_gb": 8, "uplink_mbps": {"lognormal": {"median": 12, "sigma": 0.8}}}],
    "server": {"profile": "h100_80gb", "gpus": 8, "queue": "fifo"},
    "method": {"name": "sfl", "split_point": 2, "rank": 4},
    "rounds": 1, "local_iterations": 10, "progress": False,
}


ASYNC_PASSES = [2]  # async: sessions per client, about (`--passes`)


def async_settings(n: int) -> dict:
    concurrency = max(n // 2, 4)
    buffer = concurrency // 4
    return {"mode": "async", "concurrency": concurrency, "buffer": buffer,
            "aggregations": ASYNC_PASSES[0] * n // buffer}


def scenario_for(n: int, iterations: int, aggregation: str = "sync", events: str = "phase"):
    from hsplit_actors.scenario import parse_scenario

    raw = json.loads(json.dumps(SCENARIO))
    raw["fleet"][0]["count"] = n
    raw["local_iterations"] = iterations
    raw["events"] = events
    if aggregation == "async":
        raw["aggregation"] = async_settings(n)
    return parse_scenario(yaml.safe_dump(raw))


def durations(scenario):
    """Per-client phase durations exactly as the engine computes them."""
    from hsplit_actors.preparation import prepare
    from hsplit_actors.timing.roofline import Rates

    setup = prepare(scenario)
    fleet, strategy = setup.fleet, setup.strategy
    config = strategy.configure(0, fleet).configs[0]
    cost = strategy.cost(config)
    lat = fleet.latency_ms / 1e3
    up_bps, down_bps = fleet.uplink_mbps * 1e6, fleet.downlink_mbps * 1e6
    agg = cost.adapter_params * 4
    phases = [strategy.durations.client(cost, config, 0, Rates.of(f, m, u))
              for f, m, u in zip(fleet.flops.tolist(), fleet.mem_gbps.tolist(), fleet.launch_us.tolist(), strict=True)]
    server_flops = strategy.durations.server_rates.flops
    return {
        "fwd": [p[0] for p in phases], "bwd": [p[1] for p in phases],
        "up": (cost.uplink_bytes * 8 / up_bps + lat).tolist(),
        "down": (cost.downlink_bytes * 8 / down_bps + lat).tolist(),
        "srv": strategy.durations.server(cost, config), "agg_up": (agg * 8 / up_bps + lat).tolist(),
        "agg_down": (agg * 8 / down_bps + lat).tolist(), "agg": 2.0 * agg / 4 * len(fleet) / server_flops,
    }


def _pool(env, gpus: int, pool: str, clients: int):
    from hsplit_actors.engine.server import GPUQueue, GPUReservations

    if pool == "reserve":
        return GPUReservations(env, gpus, clients)
    return {"heap": GPUQueue}.get(pool, simpy_resource)(env, gpus)


def simpy_resource(env, gpus: int):
    import simpy

    return simpy.Resource(env, capacity=gpus)


def bare(d: dict, n: int, iterations: int, gpus: int, pool: str) -> float:
    """The engine's yields with nothing else: returns the virtual end time. `reserve`: as the engine under
    FIFO in sync (a GPU reserved on arrival, the iteration's end parked until its start and chained with the
    next uplink); `heap` / `simpy`: requests waiting in the engine's heap pool or a `simpy.Resource`, the
    path the engine takes for other queue disciplines and in `run`."""
    from hsplit_actors.engine.clock import Clock

    env = Clock()
    state = {"left": n}
    uploaded = env.event()
    gpu = _pool(env, gpus, pool, n)

    def client(c: int):  # each pool's loop written out: a shared helper would slow the baseline down
        timeout, at = env.timeout, env.at
        fwd, up, down, bwd, srv = d["fwd"][c], d["up"][c], d["down"][c], d["bwd"][c], d["srv"]
        if pool == "reserve":
            n2 = (env.now + fwd) + up
            yield at(n2)
            for i in range(iterations):
                t3, _ = gpu.reserve(srv)
                t6 = ((t3 + srv) + down) + bwd
                if i < iterations - 1:
                    n2 = (t6 + fwd) + up
                    yield at(n2, t3)
                else:
                    yield at(t6, t3)
        else:
            for _ in range(iterations):
                yield at((env.now + fwd) + up)  # forward + uplink is one event, as is downlink + backward
                if pool == "heap":
                    yield gpu.request(0.0, srv)
                    yield timeout(srv)
                    gpu.release(srv)
                else:
                    with gpu.request() as req:
                        yield req
                        yield timeout(srv)
                yield at((env.now + down) + bwd)
        yield timeout(d["agg_up"][c])
        state["left"] -= 1
        if state["left"] == 0:
            uploaded.succeed()
        # no download after the last aggregation: since issue 10 a download opens a client's next session

    def server():
        yield uploaded
        yield env.timeout(d["agg"])

    for c in range(n):
        env.process(client(c))
    env.process(server())
    env.run()
    return env.now


def bare_async(d: dict, n: int, iterations: int, gpus: int, pool: str) -> tuple[float, int]:
    """FedBuff's yields with nothing else: C slots, each running sessions of the next idle client (download,
    iterations, upload into a store); an aggregator takes K uploads per aggregation. Returns the virtual end
    time and the client-iterations done. `reserve` parks each iteration's end until its GPU start and chains it
    with the next uplink, as the engine does under FIFO when no session is ever stopped (no `max_staleness`)."""
    from collections import deque

    import simpy

    from hsplit_actors.engine.clock import Clock

    settings = async_settings(n)
    env = Clock()
    store = simpy.Store(env)
    gpu = _pool(env, gpus, pool, n)
    idle = deque(range(n))
    state = {"done": False, "iterations": 0}
    finished = env.event()

    def session(c: int):  # bare()'s yields, inlined on purpose: a shared helper would slow the baseline down
        timeout, at = env.timeout, env.at
        fwd, up, down, bwd, srv = d["fwd"][c], d["up"][c], d["down"][c], d["bwd"][c], d["srv"]
        yield timeout(d["agg_down"][c])
        if pool == "reserve":
            n2 = (env.now + fwd) + up
            yield at(n2)
            for i in range(iterations):
                t3, _ = gpu.reserve(srv)
                t6 = ((t3 + srv) + down) + bwd
                if i < iterations - 1:
                    n2 = (t6 + fwd) + up
                    yield at(n2, t3)
                else:
                    yield at(t6, t3)
                state["iterations"] += 1
        else:
            for _ in range(iterations):
                yield at((env.now + fwd) + up)
                if pool == "heap":
                    yield gpu.request(0.0, srv)
                    yield timeout(srv)
                    gpu.release(srv)
                else:
                    with gpu.request() as req:
                        yield req
                        yield timeout(srv)
                yield at((env.now + down) + bwd)
                state["iterations"] += 1
        yield timeout(d["agg_up"][c])
        yield store.put(c)

    def slot():
        while not state["done"]:
            c = idle.popleft()
            yield from session(c)
            idle.append(c)

    def aggregator():
        for _ in range(settings["aggregations"]):
            for _ in range(settings["buffer"]):
                yield store.get()
            yield env.timeout(d["agg"] * settings["buffer"] / n)
        state["done"] = True
        finished.succeed()

    for _ in range(settings["concurrency"]):
        env.process(slot())
    env.process(aggregator())
    env.run(until=finished)
    return env.now, state["iterations"]


def child(mode: str, n: int, iterations: int, aggregation: str = "sync", events: str = "phase",
          warm_up: bool = True) -> dict:
    """Best of `repeats(n)` timed runs, after a warm-up."""
    if warm_up:  # one small run first, so one-time lazy imports (pyarrow, parquet writer) are not timed
        once(mode, 200, 2, aggregation, events)
    runs = [once(mode, n, iterations, aggregation, events) for _ in range(repeats(n))]
    best = min(runs, key=lambda r: r["wall_s"])
    return best | {"repeats": len(runs)}


def repeats(n: int) -> int:
    return 3 if n <= 10_000 else 1


def once(mode: str, n: int, iterations: int, aggregation: str = "sync", events: str = "phase") -> dict:
    scenario = scenario_for(n, iterations, aggregation, events)
    if mode == "engine":
        from hsplit_actors.planning import plan

        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            directory, tables, _ = plan(scenario, Path(tmp) / "run")
            wall = time.perf_counter() - start
            end = float(tables.rounds["t_end"].max())
            rows = tables.rows("events")  # written in row groups: never built whole here
            done = int(tables.clients["iterations_done"].sum())
    else:
        d = durations(scenario)
        start = time.perf_counter()
        if aggregation == "async":
            end, done = bare_async(d, n, iterations, scenario.server.gpus, mode.split("-")[1])
        else:
            end, done = bare(d, n, iterations, scenario.server.gpus, mode.split("-")[1]), n * iterations
        wall = time.perf_counter() - start
        rows = 0
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"mode": mode, "n": n, "wall_s": wall, "virtual_end": end, "rss_gb": rss_gb, "event_rows": rows,
            "client_its": done, "rate": done / wall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--aggregation", choices=["sync", "async"], default="sync")
    parser.add_argument("--events", choices=["phase", "iteration", "none"], default="phase")
    parser.add_argument("--modes", default="engine,bare-reserve,bare-heap,bare-simpy", help="which to run")
    parser.add_argument("--passes", type=int, default=2,
                        help="async: sessions per client (aggregations = passes x N / K); 1 is N x iterations")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    ASYNC_PASSES[0] = args.passes
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.iterations, args.aggregation, args.events)))
        return
    print(f"aggregation: {args.aggregation}, events: {args.events}")
    print(f"{'clients':>8} {'mode':>10} {'wall s':>8} {'client-its':>10} {'client-it/s':>12} {'peak RSS GB':>11} "
          f"{'events':>10} {'virtual end s':>14}")
    for n in (int(s) for s in args.sizes.split(",")):
        results = {}
        for mode in args.modes.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(n), "--iterations",
                                  str(args.iterations), "--aggregation", args.aggregation, "--events", args.events,
                                  "--passes", str(args.passes)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[mode] = r
            print(f"{n:>8} {mode:>10} {r['wall_s']:>8.2f} {r['client_its']:>10,} {r['rate']:>12,.0f} "
                  f"{r['rss_gb']:>11.2f} {r['event_rows']:>10,} {r['virtual_end']:>14.3f}")
        ends = {round(r["virtual_end"], 6) for r in results.values()}
        if args.aggregation == "sync":
            assert len(ends) == 1, f"virtual end times differ: {ends}"
        if "engine" not in results:
            continue
        for bare_mode in ("bare-reserve", "bare-heap", "bare-simpy"):
            if bare_mode in results:
                print(f"{n:>8} {'ratio':>10} engine / {bare_mode} = "
                      f"{results['engine']['rate'] / results[bare_mode]['rate']:.2f}")

if __name__ == "__main__":
    main()
