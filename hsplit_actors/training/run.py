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

import pandas as pd
import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hsplit_actors.errors import ScenarioError
from hsplit_actors.plan import Setup, prepare, simulate
from hsplit_actors.runs import FAULT_COLUMNS, IMPORTANCE_COLUMNS, RunTables, new_run_dir, write_run
from hsplit_actors.scenario import dump_scenario
from hsplit_actors.scenario.schema import Scenario
from hsplit_actors.training.executor import TrainingExecutor, load_checkpoint
from hsplit_actors.training.hosts import ClientHost, ServerHost
from hsplit_actors.training.runtime import LocalRuntime, RayRuntime
from hsplit_actors.training.setup import base_model, host_setup, initial_adapters, training_data

Progress = Callable[[int, int, float], None]


def client_actor_count(scenario: Scenario, n_clients: int) -> int:
    if scenario.train.actors:
        return min(scenario.train.actors, n_clients)
    spare = max(1, (os.cpu_count() or 2) - 1)  # one CPU for the server
    return max(1, min(n_clients, spare))


def train(scenario: Scenario, setup: Setup, use_ray: bool, on_progress: Progress | None = None,
          checkpoint_dir: str | None = None, resume: dict | None = None):
    """Build hosts and executor, run the engine; returns (tables, wall seconds, meta extras)."""
    arch, fleet, strategy = setup.arch, setup.fleet, setup.strategy
    data = training_data(scenario, len(fleet))
    model, state, recipe = base_model(scenario, arch)
    factors, head, keys = initial_adapters(scenario, model, strategy, strategy.configure(0, fleet))
    del model
    hsetup = host_setup(scenario, keys)
    n_hosts = client_actor_count(scenario, len(fleet))
    if use_ray:
        runtime = RayRuntime(scenario.train.max_in_flight)
        state_ref, train_ref = ray.put(state), ray.put(data.train)  # once, shared by every actor on the node
        client_cls = ray.remote(num_cpus=0, max_restarts=-1)(ClientHost)
        server_cls = ray.remote(num_cpus=0, num_gpus=0)(ServerHost)
        # Round-robin over the nodes, hard affinity: a soft one silently falls back to the head node while a
        # just-joined node's resources are not yet known to the scheduler. (A lost node is not re-placed.)
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        hosts = [client_cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[i % len(nodes)],
                                                                                       soft=False))
                 .remote(recipe, state_ref, hsetup, train_ref) for i in range(n_hosts)]
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        server = server_cls.options(num_gpus=gpus).remote(recipe, state_ref, hsetup, strategy.shared_server,
                                                          data.test)
        ray.get([h.ping.remote() for h in hosts] + [server.ping.remote()])
    else:
        runtime = LocalRuntime()
        threads = torch.get_num_threads()  # hosts set the per-host count; give the process its own back after
        hosts = [ClientHost(recipe, state, hsetup, data.train) for _ in range(n_hosts)]
        server = ServerHost(recipe, state, hsetup, strategy.shared_server, data.test)
    if scenario.train.kill_actor and not use_ray:
        raise ScenarioError("fault injection kills Ray actors; unset train.local", field="train.kill_actor")
    for kill in scenario.train.kill_actor:
        if kill.actor >= n_hosts:
            raise ScenarioError(f"there are {n_hosts} client actors (0..{n_hosts - 1}), not {kill.actor + 1}",
                                field="train.kill_actor")
    executor = TrainingExecutor(runtime, hosts, server, data.partitions, strategy, (factors, head), arch.n_layers,
                                scenario.train.eval_every, data.metric, checkpoint_dir=checkpoint_dir,
                                resume=resume, kills=[k.model_dump() for k in scenario.train.kill_actor])
    try:
        tables, wall_s, extra = simulate(scenario, setup, executor, on_progress)
    finally:
        if not use_ray:
            torch.set_num_threads(threads)
    tables.faults = pd.DataFrame(executor.faults, columns=FAULT_COLUMNS)
    tables.importance = pd.DataFrame(strategy.importance_rows(), columns=IMPORTANCE_COLUMNS)
    extra |= {"client_actors": n_hosts, "ray": use_ray, "metric": data.metric, "faults": len(executor.faults),
              "resumed_from_round": resume["round"] if resume else None}
    busy = runtime.get([runtime.call(h, "busy_seconds") for h in hosts] + [runtime.call(server, "busy_seconds")])
    extra["host_busy_s"] = {"client_hosts": busy[:-1], "server": busy[-1]}
    if use_ray:
        extra["client_nodes"] = sorted({ray.get(h.node.remote()) for h in hosts})
    return tables, wall_s, extra


@ray.remote(num_cpus=0, max_concurrency=2)
class Coordinator:
    """Owns the SimPy environment (the only clock) and submits all work; `progress` answers while `run` runs."""

    def __init__(self) -> None:
        self.state = {"done": 0, "round": 0, "t": 0.0}

    def run(self, scenario: Scenario, checkpoint_dir: str | None, resume: dict | None):
        def note(done: int, rnd: int, now: float) -> None:
            self.state = {"done": done, "round": rnd, "t": now}

        return train(scenario, prepare(scenario), True, note, checkpoint_dir, resume)

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
        ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=os.cpu_count())


def resume_state(directory: str | Path) -> tuple[Scenario, dict]:
    """The scenario and newest checkpoint of an interrupted run directory."""
    from hsplit_actors.scenario import load_scenario

    directory = Path(directory)
    if (directory / "meta.json").is_file():
        raise ScenarioError(f"{directory} finished already; there is nothing to resume", field="--resume")
    if not (directory / "scenario.yaml").is_file():
        raise ScenarioError(f"{directory} is not a run directory (no scenario.yaml)", field="--resume")
    checkpoint = load_checkpoint(directory / "checkpoints")
    if checkpoint is None:
        raise ScenarioError(f"{directory} has no checkpoint yet; start the run again instead", field="--resume")
    return load_scenario(directory / "scenario.yaml"), checkpoint


def run(scenario: Scenario | None, out: str | Path | None = None, address: str | None = None,
        on_progress: Progress | None = None, resume: str | Path | None = None) -> tuple[Path, RunTables, dict]:
    """Train a scenario and write its run directory; with `resume`, continue an interrupted one."""
    checkpoint = None
    if resume is not None:
        saved, checkpoint = resume_state(resume)
        scenario = scenario or saved  # the caller may change how it runs (e.g. train.local), not what
        directory = Path(resume)
    else:
        directory = new_run_dir(scenario, "run", str(out) if out else None)
    setup = prepare(scenario)
    if resume is None:
        if directory.exists():
            raise FileExistsError(f"run directory {directory} already exists; choose another --out")
        directory.mkdir(parents=True)
        (directory / "scenario.yaml").write_text(dump_scenario(scenario))
    checkpoint_dir = str(directory / "checkpoints") if scenario.train.checkpoint else None
    if scenario.train.local:
        tables, wall_s, extra = train(scenario, setup, False, on_progress, checkpoint_dir, checkpoint)
    else:
        connect(address or scenario.ray.address)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        coordinator = Coordinator.options(scheduling_strategy=here).remote()  # checkpoints land on this machine
        result = coordinator.run.remote(scenario, checkpoint_dir, checkpoint)
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
