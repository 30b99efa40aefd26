"""The Ray side of `hsplit run`: the Coordinator actor (owns the SimPy clock, the only submitter of work) and the
host actors (client hosts with many virtual clients each, and the server host).

Start-up is overlapped: the driver creates every actor at once, so their processes import side by side. The
coordinator (torch, pandas, no transformers) reads the data and chooses the samples meanwhile; the server host,
which imports transformers anyway, makes the shared assets from them (encoded data, frozen weights, initial
adapters), without pandas, and returns them to the coordinator, which owns them in the object store; a client
host's constructor asks the coordinator for them (and waits). Constructors take no object-store
arguments, so a restarted host rebuilds itself the same way. The driver imports neither torch nor transformers.

A driver keeps one crew (coordinator, server host, client hosts) between runs in one Ray session on one machine
(`Crew`, `end_crew`): the next run rebuilds its hosts in those processes instead of importing torch, transformers
and peft in new ones, seconds each. Results do not depend on it (every step is seeded by what it computes).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
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


HOST_PARTS = ("recipe", "setup", "state", "train", "test")  # what hosts are built from (Assets.for_hosts)


def made_assets(scenario: Scenario, setup, samples) -> tuple:
    """The run's assets, made in this process from the run's `samples`: `Start` (the coordinator's part, with the
    data's warnings for the driver to raise: an actor's own would be lost), then the hosts' parts in HOST_PARTS
    order, each to be its own object in the object store."""
    from hsplit_actors.training.assets import prepare_assets

    with data_warnings() as said:
        assets = prepare_assets(scenario, setup, samples)
    start, for_hosts = assets.start(), assets.for_hosts()
    start.warnings = said
    return (start, *(for_hosts[k] for k in HOST_PARTS))


@contextlib.contextmanager
def data_warnings():
    """The data's warnings (`hsplit_actors.data`) raised inside, recorded as (category, message) for the driver
    to raise again; any other warning passes through."""
    said: list[tuple[type[Warning], str]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield said
    for w in caught:
        if w.category.__module__ == "hsplit_actors.data":
            said.append((w.category, str(w.message)))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


class HostActor:
    """A ClientHost or ServerHost in its own process; `call` runs one of its methods (ObjectRef arguments arrive
    resolved, results stay in the object store until someone needs them). A client host is built in its
    constructor; the server host at its first call, since on its first start it makes the assets itself
    (`make_assets`) before anything can be built from them."""

    def __init__(self, kind: str, coordinator: str) -> None:
        start = time.perf_counter()
        with collector_paused():
            import hsplit_actors.training.assets  # noqa: F401 - torch, transformers, peft and the hosts' code

        self.kind, self.coordinator = kind, coordinator  # the coordinator by name: an argument that is a handle
        # would count as held in the object store
        self.imported = time.perf_counter()
        self.import_s = self.imported - start
        self.host, self.error = None, None
        if kind == "client":
            self._build()

    def ping(self) -> bool:
        """Alive (a kept crew is checked before a run takes it)."""
        return True

    def release(self) -> None:
        """The run is over and this process is kept for the next: drop the host, keep the imports."""
        self.host, self.error = None, None
        import gc

        gc.collect()

    def rebuild(self) -> None:
        """A new run in this kept process: build from its assets (a client host at once, as its constructor does;
        the server host at its first call). Nothing is imported this time."""
        self.import_s, self.imported = 0.0, time.perf_counter()
        if self.kind == "client" and self.host is None and self.error is None:
            self._build()

    def _build(self) -> None:
        """Build the host from the assets in the object store (waiting for the coordinator to have them)."""
        from hsplit_actors.training.assets import client_host, server_host

        try:
            shared = ray.get(ray.get_actor(self.coordinator).assets.remote())
            wanted = [k for k in HOST_PARTS if k != ("test" if self.kind == "client" else "train")]
            parts = dict(zip(wanted, ray.get([shared[k] for k in wanted]), strict=True))
            received = time.perf_counter()
            self.host = client_host(parts) if self.kind == "client" else server_host(parts, shared["shared_server"])
            # where this actor's start went (its process had started and imported Ray before `start`)
            self.host.startup = {"import_s": self.import_s, "wait_for_assets_s": received - self.imported,
                                 "build_s": time.perf_counter() - received}
        except Exception as exc:  # noqa: BLE001 - the coordinator reports why set-up failed; the host just stops
            self.error = exc

    def make_assets(self, scenario: Scenario, setup, samples) -> tuple:
        """The run's assets, made in this process (which imports transformers anyway) from the samples the
        coordinator chose; returned, so that the caller, the coordinator, owns them in the object store and they
        outlive this actor. `Start` first, then the hosts' parts in HOST_PARTS order."""
        return made_assets(scenario, setup, samples)

    def export_model(self, run_dir: str) -> str:
        """Write the run's final model (`model/final.pt`, saved by the coordinator) in transformers' and peft's
        forms; the directory written, relative to `run_dir`."""
        from hsplit_actors.exporting import export

        return str(export(run_dir).relative_to(run_dir))

    def call(self, method: str, *args: Any) -> Any:
        if self.host is None and self.error is None:
            self._build()
        if self.host is None:
            raise RuntimeError(f"this host could not be set up: {self.error}")
        return getattr(self.host, method)(*args)


@ray.remote(num_cpus=0, max_concurrency=3, concurrency_groups={"hosts": 16})
class Coordinator:
    """Owns the SimPy environment (the only clock) and submits all work. `prepare`, `run` and `progress` share
    the default threads; hosts asking for their assets wait in a group of their own, so they never hold those.
    It imports torch (aggregation) but never transformers or peft where the server host is on its node: that
    host makes the assets and writes the exported model."""

    def __init__(self, name: str) -> None:
        self.name = name  # hosts find it by name; replacements of lost hosts too
        self.state = None  # the engine's latest Progress, for the driver's bar
        self.prepared = threading.Event()
        self.shared: dict | None = None
        self.error: BaseException | None = None
        self.server = None  # the server host now (a replacement, after a loss for good)

    def prepare(self, scenario: Scenario, server, server_here: bool) -> None:
        """The timing set-up and the samples chosen here; the data encoded, the frozen model loaded and the
        initial adapters made by `server` when it is on this node, else here (objects live on the node that makes
        them: a GPU node lost would take them along). What the hosts are built from goes into the object store
        once (the hosts on a node share it zero-copy). A failure is kept for `run` and `assets` to raise (nobody
        waits on this call's own result)."""
        self.prepare_started = time.time()  # wall clock: the driver, on this node, tells how long the actor took
        self.server, self.server_here = server, server_here
        start = time.perf_counter()
        with collector_paused():
            import torch  # noqa: F401 - the global adapters and every update are tensors

            from hsplit_actors.data.samples import choose_samples
            from hsplit_actors.preparation import prepare

            # and what `run` needs, here: two threads importing one package's modules at once can deadlock
            # (Python's _DeadlockError), and the server host is importing for seconds longer anyway
            from hsplit_actors.training import runtime, trainer  # noqa: F401

        self.import_s = time.perf_counter() - start
        start = time.perf_counter()
        try:
            self.setup = prepare(scenario)
            with data_warnings() as said:  # while the server host still imports: it then needs no pandas
                samples = choose_samples(scenario, len(self.setup.fleet))
            refs = (self._assets_from(server, scenario, samples) if server_here
                    else self._assets_here(scenario, samples))
            self.start = ray.get(refs[0])
            self.start.warnings = said + self.start.warnings
            self.shared = dict(zip(HOST_PARTS, refs[1:], strict=True)) | {
                "shared_server": self.setup.strategy.capability(SharedServerSet) is not None}
        except ray.exceptions.RayTaskError as exc:  # what went wrong in the server host, e.g. too little data
            self.error = exc.cause
        except Exception as exc:  # noqa: BLE001 - raised again by run() and assets()
            self.error = exc
        finally:
            self.prepare_s = time.perf_counter() - start
            self.prepared.set()

    def _assets_from(self, server, scenario: Scenario, samples, attempts: int = 3) -> list:
        """The server host's `make_assets` (again if its process is lost meanwhile: Ray restarts it)."""
        for attempt in range(attempts):
            refs = server.make_assets.options(num_returns=1 + len(HOST_PARTS)).remote(scenario, self.setup, samples)
            try:
                ray.wait(refs, num_returns=len(refs), fetch_local=False)
                ray.get(refs[0])
                return refs
            except ray.exceptions.RayActorError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _assets_here(self, scenario: Scenario, samples) -> list:
        with collector_paused():
            import hsplit_actors.training.assets  # noqa: F401 - transformers and peft, in this process after all

        return [ray.put(part) for part in made_assets(scenario, self.setup, samples)]

    def _wait_prepared(self) -> None:
        self.prepared.wait()
        if self.error is not None:
            raise self.error

    @ray.method(concurrency_group="hosts")
    def assets(self) -> dict:
        """What a host is built from (references into the object store), once `prepare` has made it."""
        self._wait_prepared()
        return self.shared

    def _replace_server(self, node: str):
        self.server = start_server_host(self.name, node)
        return self.server

    def run(self, scenario: Scenario, hosts: list, server, checkpoint_dir: str | None, resume: dict | None,
            export_to: str | None = None):
        """Train on `hosts` and `server`, after `prepare`; with `export_to` (a run directory on this node), write
        the final model there too, by the server host where it is on this node (it has transformers loaded; the
        driver has neither it nor torch, and receives no tensors)."""
        self._wait_prepared()  # before importing anything: `prepare` imports in another thread (see there)
        from hsplit_actors.training.runtime import RayRuntime
        from hsplit_actors.training.trainer import train

        def note(progress) -> None:
            self.state = progress

        here = ray.get_runtime_context().get_node_id()
        runtime = RayRuntime(scenario.train.max_in_flight,
                             replace_client=lambda i, lost: start_client_host(self.name, i, lost, here),
                             replace_server=lambda: self._replace_server(here))
        tables, train_s, extra, final = train(scenario, self.setup, self.start, runtime, hosts, server, note,
                                              checkpoint_dir, resume)
        if export_to is not None:
            from hsplit_actors.exporting import save_final

            save_final(export_to, **final)
            if self.server_here:
                extra["model"] = ray.get(self.server.export_model.remote(export_to))
            else:
                from hsplit_actors.exporting import export

                extra["model"] = str(export(export_to).relative_to(export_to))
        libraries = [m for m in ("torch", "transformers", "peft") if m in sys.modules]
        return tables, train_s, extra | {"prepare_s": self.prepare_s, "coordinator_import_s": self.import_s,
                                         "prepare_started": self.prepare_started,
                                         "coordinator_libraries": libraries,
                                         "data_warnings": self.start.warnings}, None

    def progress(self):
        return self.state

    def release(self) -> None:
        """The run is over and this process is kept for the next: forget it (its objects go with it); the next
        run's `prepare` starts afresh, and hosts asking for assets meanwhile wait for it."""
        self.state, self.shared, self.error, self.server = None, None, None, None
        self.setup = self.start = None
        self.prepared = threading.Event()


@dataclass
class Crew:
    """A run's actors. Hosts find the coordinator by `name`, also after Ray restarted them, so a crew kept for the
    next run stays whole; `session` tells which Ray instance its handles belong to."""

    name: str
    coordinator: Any
    server: Any
    clients: list = field(default_factory=list)
    session: str = ""
    reused: bool = False


_KEPT: list[Crew] = []  # at most one idle crew, kept by this driver for its next run
_KEPT_LOCK = threading.Lock()
_KEEP_IN_WORKER: list[bool] = []  # set in a process that runs one run after another as a Ray worker (a trial)


def keep_crews_in_this_worker() -> None:
    """This Ray worker runs runs one after another and its crews end with it: a `compare` trial, whose process
    Tune reuses for the next trial and ends with the sweep."""
    _KEEP_IN_WORKER[:] = [True]


def _session() -> str:
    """This driver's Ray instance and job: handles from another (Ray stopped and started again) are void."""
    context = ray.get_runtime_context()
    return f"{context.get_node_id()}/{context.get_job_id()}"


def _keeps_crews() -> bool:
    """Crews are kept by a driver, or by a worker that said it ends them (`keep_crews_in_this_worker`; any
    other task would leave them behind), on a single machine without a GPU: no idle actor ever holds a GPU or a
    node that may go."""
    driver = ray.get_runtime_context().worker.mode == ray.SCRIPT_MODE
    if not (driver or _KEEP_IN_WORKER) or server_on_gpu():
        return False
    return len(live_nodes()) == 1


def _kill(crew: Crew) -> None:
    for actor in (*crew.clients, crew.server, crew.coordinator):
        with contextlib.suppress(Exception):
            ray.kill(actor)


def _kept_crew() -> Crew | None:
    """The crew kept from this driver's previous run, if it is of this Ray session and every actor answers."""
    with _KEPT_LOCK:
        crew = _KEPT.pop() if _KEPT else None
    if crew is None or crew.session != _session() or not _keeps_crews():
        return None
    try:
        ray.get([crew.coordinator.progress.remote(), crew.server.ping.remote(),
                 *(h.ping.remote() for h in crew.clients)], timeout=30)
    except (ray.exceptions.RayError, TimeoutError):
        _kill(crew)
        return None
    crew.reused = True
    return crew


def start_actors(scenario: Scenario, n_hosts: int) -> Crew:
    """The crew kept from this driver's previous run (hosts added or ended to make `n_hosts`), else a new one:
    the coordinator (on this machine: checkpoints land here), the server host (with a GPU when the cluster has
    one) and the client hosts (round-robin over the nodes), all at once."""
    crew = _kept_crew()
    if crew is None:
        node = ray.get_runtime_context().get_node_id()
        name = f"hsplit-coordinator-{uuid.uuid4().hex}"
        coordinator = Coordinator.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                                          name=name).remote(name)
        crew = Crew(name, coordinator, start_server_host(name, node), session=_session())
    crew.coordinator.prepare.remote(scenario, crew.server, not server_on_gpu())
    for surplus in crew.clients[n_hosts:]:
        ray.kill(surplus)
    crew.clients = crew.clients[:n_hosts]
    if crew.reused:
        for host in (crew.server, *crew.clients):
            host.rebuild.remote()
    crew.clients += [start_client_host(crew.name, i) for i in range(len(crew.clients), n_hosts)]
    return crew


def end_crew(crew: Crew, keep: bool) -> None:
    """After a run: keep its crew for this driver's next run (`keep`: it ended cleanly, nothing was lost or
    injected, and crews are kept here), else end its actors."""
    if keep and _keeps_crews():
        try:
            ray.get([crew.coordinator.release.remote(), crew.server.release.remote(),
                     *(h.release.remote() for h in crew.clients)], timeout=30)
            with _KEPT_LOCK:
                if not _KEPT:
                    _KEPT.append(crew)
                    return
        except (ray.exceptions.RayError, TimeoutError):
            pass
    _kill(crew)


def end_kept_crews() -> None:
    """End the crew this driver kept (before Ray stops, or for a test that counts actors)."""
    with _KEPT_LOCK:
        kept = list(_KEPT)
        _KEPT.clear()
    for crew in kept:
        _kill(crew)


def server_on_gpu() -> bool:
    """Whether the server host goes to a GPU node (the cluster has a GPU), rather than beside the coordinator."""
    return ray.cluster_resources().get("GPU", 0) >= 1


ServerHostActor = ray.remote(num_cpus=0, max_restarts=-1)(HostActor)  # in submission order: the virtual order


def start_server_host(coordinator: str, node: str):
    """The server host: on a GPU node when the cluster has one, else beside the coordinator on `node` (so losing
    a worker node never takes it). Restarted in place or replaced like a client host."""
    gpus = 1 if server_on_gpu() else 0
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
