"""The Ray side of `hsplit run`: the Coordinator actor (owns the SimPy clock, the only submitter of work) and the
host actors (client hosts with many virtual clients each, and the server host).

Start-up is overlapped: the driver creates every actor at once, so their processes import torch side by side
while the coordinator prepares the shared assets; a host's constructor then asks the coordinator for them (and
waits). Constructors take no object-store arguments, so a restarted host rebuilds itself the same way. Heavy
imports happen inside the actors, which keeps the driver light.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hsplit_actors.collector import collector_paused
from hsplit_actors.methods.base import SharedServerSet, Strategy, WholeModelOnClients
from hsplit_actors.scenario.schema import Scenario
from hsplit_actors.training.ray_state import live_nodes


def client_actor_count(scenario: Scenario, n_clients: int, strategy: Strategy, cpus: int | None = None) -> int:
    """`train.actors`, or by default every core: one client actor per CPU (of this machine, or of the Ray cluster
    when `cpus` is given), less the one the server host works on for a split method; at most one per client.
    Results do not depend on the count (each virtual client's steps are seeded by what they compute)."""
    if scenario.train.actors:
        return min(scenario.train.actors, n_clients)
    cpus = cpus or os.cpu_count() or 2
    server_cpu = 0 if strategy.capability(WholeModelOnClients) else 1  # the server host only evaluates
    return max(1, min(n_clients, cpus - server_cpu))


class HostActor:
    """A ClientHost or ServerHost in its own process; `call` runs one of its methods (ObjectRef arguments arrive
    resolved, results stay in the object store until someone needs them)."""

    def __init__(self, kind: str, coordinator: str) -> None:
        start = time.perf_counter()
        with collector_paused():
            from hsplit_actors.training.hosts import ClientHost, ServerHost

        imported = time.perf_counter()
        self.host, self.error = None, None
        try:  # the coordinator by name: an argument that is a handle would count as held in the object store
            assets = ray.get(ray.get_actor(coordinator).assets.remote())  # waits for the coordinator's preparation
            common = (assets["recipe"], ray.get(assets["state"]), assets["setup"])
            received = time.perf_counter()
            if kind == "client":
                self.host = ClientHost(*common, ray.get(assets["train"]))
            else:
                self.host = ServerHost(*common, assets["shared_server"], ray.get(assets["test"]))
            # where this actor's start went (its process had started and imported Ray before `start`)
            self.host.startup = {"import_s": imported - start, "wait_for_assets_s": received - imported,
                                 "build_s": time.perf_counter() - received}
        except Exception as exc:  # noqa: BLE001 - the coordinator reports why set-up failed; the host just stops
            self.error = exc

    def call(self, method: str, *args: Any) -> Any:
        if self.host is None:
            raise RuntimeError(f"this host could not be set up: {self.error}")
        return getattr(self.host, method)(*args)


@ray.remote(num_cpus=0, max_concurrency=3, concurrency_groups={"hosts": 16})
class Coordinator:
    """Owns the SimPy environment (the only clock) and submits all work. `prepare`, `run` and `progress` share
    the default threads; hosts asking for their assets wait in a group of their own, so they never hold those."""

    def __init__(self, name: str) -> None:
        self.name = name  # hosts find it by name; replacements of lost hosts too
        self.state = None  # the engine's latest Progress, for the driver's bar
        self.prepared = threading.Event()
        self.shared: dict | None = None
        self.error: BaseException | None = None

    def prepare(self, scenario: Scenario) -> None:
        """Encode the data, load the frozen model and the initial adapters; what the hosts are built from goes
        into the object store once (the hosts on a node share it zero-copy). A failure is kept for `run` and
        `assets` to raise (nobody waits on this call's own result)."""
        self.prepare_started = time.time()  # wall clock: the driver, on this node, tells how long the actor took
        start = time.perf_counter()
        with collector_paused():
            from hsplit_actors.simulation import prepare
            from hsplit_actors.training.trainer import prepare_assets

        self.import_s = time.perf_counter() - start
        start = time.perf_counter()
        try:
            self.setup = prepare(scenario)
            self.assets = prepare_assets(scenario, self.setup)
            self.shared = {"recipe": self.assets.recipe, "setup": self.assets.host_setup,
                           "state": ray.put(self.assets.state), "train": ray.put(self.assets.data.train),
                           "test": ray.put(self.assets.data.test),
                           "shared_server": self.setup.strategy.capability(SharedServerSet) is not None}
        except Exception as exc:  # noqa: BLE001 - raised again by run() and assets()
            self.error = exc
        finally:
            self.prepare_s = time.perf_counter() - start
            self.prepared.set()

    def _wait_prepared(self) -> None:
        self.prepared.wait()
        if self.error is not None:
            raise self.error

    @ray.method(concurrency_group="hosts")
    def assets(self) -> dict:
        """What a host is built from (references into the object store), once `prepare` has made it."""
        self._wait_prepared()
        return self.shared

    def run(self, scenario: Scenario, hosts: list, server, checkpoint_dir: str | None, resume: dict | None,
            export_to: str | None = None):
        """Train on `hosts` and `server`, after `prepare`; with `export_to` (a run directory on this node), write
        the final model there too: this process has torch and the model's code loaded already, the driver has
        neither (and receives no tensors)."""
        from hsplit_actors.training.runtime import RayRuntime
        from hsplit_actors.training.trainer import train

        self._wait_prepared()

        def note(progress) -> None:
            self.state = progress

        here = ray.get_runtime_context().get_node_id()
        runtime = RayRuntime(scenario.train.max_in_flight,
                             replace_client=lambda i, lost: start_client_host(self.name, i, lost, here),
                             replace_server=lambda: start_server_host(self.name, here))
        tables, train_s, extra, final = train(scenario, self.setup, self.assets, runtime, hosts, server, note,
                                              checkpoint_dir, resume)
        if export_to is not None:
            from hsplit_actors.exporting import export, save_final

            save_final(export_to, **final)
            extra["model"] = str(export(export_to).relative_to(export_to))
        return tables, train_s, extra | {"prepare_s": self.prepare_s, "coordinator_import_s": self.import_s,
                                  "prepare_started": self.prepare_started}, None

    def progress(self):
        return self.state


def start_actors(scenario: Scenario, n_hosts: int):
    """Create the coordinator (on this machine: checkpoints land here), the client host actors (round-robin over
    the nodes) and the server host (with a GPU when the cluster has one), all at once."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    name = f"hsplit-coordinator-{uuid.uuid4().hex}"
    coordinator = Coordinator.options(scheduling_strategy=here, name=name).remote(name)
    coordinator.prepare.remote(scenario)
    hosts = [start_client_host(name, i) for i in range(n_hosts)]
    server = start_server_host(name, ray.get_runtime_context().get_node_id())
    return coordinator, hosts, server


ServerHostActor = ray.remote(num_cpus=0, max_restarts=-1)(HostActor)  # in submission order: the virtual order


def start_server_host(coordinator: str, node: str):
    """The server host: on a GPU node when the cluster has one, else beside the coordinator on `node` (so losing
    a worker node never takes it). Restarted in place or replaced like a client host."""
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    placement = "DEFAULT" if gpus else NodeAffinitySchedulingStrategy(node, soft=False)
    return ServerHostActor.options(num_gpus=gpus, scheduling_strategy=placement).remote("server", coordinator)


# Client actors run whichever virtual client's step is ready: a client's own steps stay in order through data
# dependencies (gradient -> backward -> next forward), and results do not depend on the order between clients
# (each step is seeded by what it computes). In submission order, every client's backward would wait behind the
# slowest server step of its iteration (a pipeline bubble on the client actor).
ClientHostActor = ray.remote(num_cpus=0, max_restarts=-1, allow_out_of_order_execution=True)(HostActor)


def start_client_host(coordinator: str, index: int, avoid: str | None = None, fallback: str | None = None):
    """Client host `index` on the index-th live node, round-robin. Hard affinity: a soft one silently falls back
    to the head node while a just-joined node's resources are not yet known to the scheduler. Ray restarts a host
    that dies in place; one whose node is gone is replaced the same way over the nodes still alive, leaving out
    `avoid` (the lost node, which the cluster's node list may still show alive for a while); when the lost node
    is not known, on `fallback` (the coordinator's node, certainly alive)."""
    nodes = [n for n in live_nodes() if n != avoid]
    node = fallback if (avoid is None and fallback is not None) or not nodes else nodes[index % len(nodes)]
    placement = NodeAffinitySchedulingStrategy(node, soft=False)
    return ClientHostActor.options(scheduling_strategy=placement).remote("client", coordinator)
