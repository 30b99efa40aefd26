"""What a training run does once its hosts exist: run the SimPy engine with the executor that dispatches real
work, and build the tables. Used in-process (`train.local`) and inside the Ray Coordinator actor alike; it needs
torch but neither transformers nor peft (the hosts' modules, `assets.py`), which a coordinator never imports."""

from __future__ import annotations

import time

import pandas as pd
import torch

from hsplit_actors.engine import ProgressCallback
from hsplit_actors.preparation import Setup
from hsplit_actors.runs import FAULT_COLUMNS, IMPORTANCE_COLUMNS
from hsplit_actors.scenario.schema import Scenario
from hsplit_actors.simulation import simulate
from hsplit_actors.training.executor import ExecutorSettings, Start, TrainingExecutor


def balanced(scenario: Scenario) -> bool:
    """Whether clients move between hosts to even out a round's steps: rounds have an end to even out for (sync,
    semi-sync); async sessions overlap without one."""
    return scenario.train.balance and scenario.aggregation.mode != "async"


def train(scenario: Scenario, setup: Setup, start: Start, runtime, hosts: list, server,
          on_progress: ProgressCallback | None = None, checkpoint_dir: str | None = None, resume: dict | None = None):
    """Run the engine with real work on `hosts` and `server`; returns (tables, wall seconds, meta extras, the final
    global model: adapters, head and the aggregates merged into the base)."""
    waited = time.perf_counter()  # host processes starting, importing torch and building their model
    runtime.get([runtime.call(h, "ping") for h in hosts] + [runtime.call(server, "ping")])
    hosts_wait_s = time.perf_counter() - waited
    settings = ExecutorSettings(start.partitions, (start.factors, start.head), setup.arch.n_layers,
                                scenario.train.eval_every, start.metric, checkpoint_dir,
                                scenario.train.keep_checkpoints, resume,
                                tuple(k.model_dump() for k in scenario.train.kill_actor),
                                scenario.local_iterations if balanced(scenario) else 0)
    executor = TrainingExecutor(runtime, hosts, server, setup.strategy, settings)
    threads = torch.get_num_threads()  # in-process hosts set their own count; give the process its own back after
    try:
        tables, wall_s, extra = simulate(scenario, setup, executor, on_progress)
    finally:
        torch.set_num_threads(threads)
    tables.faults = pd.DataFrame(executor.faults, columns=FAULT_COLUMNS)
    tables.importance = pd.DataFrame(setup.strategy.importance_rows(), columns=IMPORTANCE_COLUMNS)
    extra |= {"client_actors": len(hosts), "client_host_steps": executor.placement.steps,
              "client_migrations": executor.placement.moves, "metric": start.metric, "faults": len(executor.faults),
              "hosts_wait_s": hosts_wait_s,
              "resumed_from_round": resume["round"] if resume else None} | start.baseline
    server = executor.server  # a new one if the first was lost and replaced
    busy = runtime.get([runtime.call(h, "busy_seconds") for h in hosts] + [runtime.call(server, "busy_seconds")])
    extra["host_busy_s"] = {"client_hosts": busy[:-1], "server": busy[-1]}
    starts = runtime.get([runtime.call(h, "startup_times") for h in hosts] + [runtime.call(server, "startup_times")])
    extra["host_startup_s"] = {"client_hosts": starts[:-1], "server": starts[-1]}  # side by side, not additive
    extra["client_host_nodes"] = runtime.get([runtime.call(h, "node") for h in hosts])  # per client host
    extra["client_nodes"] = sorted(set(extra["client_host_nodes"]))
    # where the computing happened: the server's device, and each distinct client-host device
    extra["server_device"] = runtime.get(runtime.call(server, "device_info"))
    clients = runtime.get([runtime.call(h, "device_info") for h in hosts])
    extra["client_devices"] = [dict(t) for t in dict.fromkeys(tuple(sorted(c.items())) for c in clients)]
    # what keeping a base per version in use costs (merged methods), and the global versions kept for deltas
    base_bytes = runtime.get([runtime.call(h, "peak_base_memory") for h in hosts])
    extra["version_bases_mb_peak"] = {"client_hosts": [b / 2**20 for b in base_bytes]}
    extra["global_versions_kept_peak"] = executor.peak_global_versions
    final = {"factors": executor.factors, "head": executor.head, "merges": [m for _, m in executor.merges]}
    return tables, wall_s, extra, final
