"""`hsplit run`: the same SimPy processes as `plan`, with an executor that trains for real.

With Ray (the default) a Coordinator actor owns the SimPy clock and is the single submitter of work to the client
actors and the server actor; the frozen weights and the encoded data go into the object store once. With
`train.local` the hosts live in this process. Both give the same tables (tests/test_run.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ray
import torch

from hsplit_actors.plan import Setup, prepare, simulate
from hsplit_actors.runs import RunTables, new_run_dir, write_run
from hsplit_actors.scenario.schema import Scenario
from hsplit_actors.training.executor import TrainingExecutor
from hsplit_actors.training.hosts import ClientHost, ServerHost
from hsplit_actors.training.runtime import LocalRuntime, RayRuntime
from hsplit_actors.training.setup import base_model, host_setup, initial_adapters, training_data

Progress = Callable[[int, int, float], None]


def client_actor_count(scenario: Scenario, n_clients: int) -> int:
    if scenario.train.actors:
        return min(scenario.train.actors, n_clients)
    spare = max(1, (os.cpu_count() or 2) - 1)  # one CPU for the server
    return max(1, min(n_clients, spare))


def train(scenario: Scenario, setup: Setup, use_ray: bool, on_progress: Progress | None = None):
    """Build hosts and executor, run the engine; returns (tables, wall seconds, meta extras)."""
    arch, fleet, strategy = setup.arch, setup.fleet, setup.strategy
    data = training_data(scenario, len(fleet))
    model, state, recipe = base_model(scenario, arch)
    factors, head, keys = initial_adapters(scenario, model, arch, strategy.configure(0, fleet))
    del model
    hsetup = host_setup(scenario, keys)
    n_hosts = client_actor_count(scenario, len(fleet))
    if use_ray:
        runtime = RayRuntime(scenario.train.max_in_flight)
        state_ref, train_ref = ray.put(state), ray.put(data.train)  # once, shared by every actor on the node
        client_cls = ray.remote(num_cpus=0, max_restarts=-1)(ClientHost)
        server_cls = ray.remote(num_cpus=0, num_gpus=0)(ServerHost)
        hosts = [client_cls.options(scheduling_strategy="SPREAD").remote(recipe, state_ref, hsetup, train_ref)
                 for _ in range(n_hosts)]
        server = server_cls.remote(recipe, state_ref, hsetup, strategy.shared_server, data.test)
        ray.get([h.ping.remote() for h in hosts] + [server.ping.remote()])
    else:
        runtime = LocalRuntime()
        threads = torch.get_num_threads()  # hosts set the per-host count; give the process its own back after
        hosts = [ClientHost(recipe, state, hsetup, data.train) for _ in range(n_hosts)]
        server = ServerHost(recipe, state, hsetup, strategy.shared_server, data.test)
    executor = TrainingExecutor(runtime, hosts, server, data.partitions, (factors, head), arch.n_layers,
                                scenario.train.eval_every, data.metric)
    try:
        tables, wall_s, extra = simulate(scenario, setup, executor, on_progress)
    finally:
        if not use_ray:
            torch.set_num_threads(threads)
    extra |= {"client_actors": n_hosts, "ray": use_ray, "metric": data.metric}
    if use_ray:
        extra["client_nodes"] = sorted({ray.get(h.node.remote()) for h in hosts})
    return tables, wall_s, extra


@ray.remote(num_cpus=0, max_concurrency=2)
class Coordinator:
    """Owns the SimPy environment (the only clock) and submits all work; `progress` answers while `run` runs."""

    def __init__(self) -> None:
        self.state = {"done": 0, "round": 0, "t": 0.0}

    def run(self, scenario: Scenario):
        def note(done: int, rnd: int, now: float) -> None:
            self.state = {"done": done, "round": rnd, "t": now}

        return train(scenario, prepare(scenario), use_ray=True, on_progress=note)

    def progress(self) -> dict:
        return self.state


def connect(address: str | None) -> None:
    """Join `address` (a running cluster) or start a local Ray instance; quiet, no dashboard."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, num_cpus=os.cpu_count())


def run(scenario: Scenario, out: str | Path | None = None, address: str | None = None,
        on_progress: Progress | None = None) -> tuple[Path, RunTables, dict]:
    """Train a scenario and write its run directory."""
    setup = prepare(scenario)
    directory = new_run_dir(scenario, "run", str(out) if out else None)
    if scenario.train.local:
        tables, wall_s, extra = train(scenario, setup, use_ray=False, on_progress=on_progress)
    else:
        connect(address or scenario.ray.address)
        coordinator = Coordinator.remote()
        result = coordinator.run.remote(scenario)
        if on_progress is not None:
            stop = threading.Event()

            def poll() -> None:
                while not stop.wait(0.5):
                    p = ray.get(coordinator.progress.remote())
                    on_progress(p["done"], p["round"], p["t"])

            thread = threading.Thread(target=poll, daemon=True)
            thread.start()
        start = time.perf_counter()
        try:
            tables, wall_s, extra = ray.get(result)
        finally:
            if on_progress is not None:
                stop.set()
        wall_s = time.perf_counter() - start
    write_run(directory, scenario, tables, "run", wall_s, extra)
    return directory, tables, extra
