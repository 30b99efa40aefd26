"""`hsplit run`: the same SimPy processes as `plan`, with an executor that trains for real.

With Ray (the default) a Coordinator actor owns the SimPy clock and is the single submitter of work to the client
actors and the server actor (`actors.py`); the frozen weights and the encoded data go into the object store once.
With `train.local` the hosts live in this process. Both give the same tables (tests/test_run.py). This module is
the driver's side and stays light: torch is imported by the actors (or, with `train.local`, on demand).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import ray

from hsplit_actors.collector import collector_paused
from hsplit_actors.data import require_real_data
from hsplit_actors.engine import ProgressCallback
from hsplit_actors.errors import Interrupted, ScenarioError
from hsplit_actors.interrupts import stop_on_sigterm
from hsplit_actors.methods.base import SharedServerSet
from hsplit_actors.preparation import Setup, prepare
from hsplit_actors.runs import RunTables, claim, is_complete, mark_incomplete, new_run_dir, write_run
from hsplit_actors.scenario import dump_scenario
from hsplit_actors.scenario.schema import Scenario
from hsplit_actors.training.actors import client_actor_count, end_crew, end_kept_crews, start_actors
from hsplit_actors.training.local_ray import forget_tokens, lean_start, loopback_start


def _check_run(scenario: Scenario) -> None:
    """What can be wrong with a scenario for training only, found before anything starts."""
    require_real_data(scenario.data.dataset)
    if scenario.train.kill_actor and scenario.train.local:
        raise ScenarioError("fault injection kills Ray actors; unset train.local", field="train.kill_actor")


def _check_faults(scenario: Scenario, n_hosts: int) -> None:
    """Faults can only be injected into client actors that exist."""
    for kill in scenario.train.kill_actor:
        if kill.actor >= n_hosts:
            have = f"{n_hosts} client actor" + ("s" if n_hosts != 1 else "")
            raise ScenarioError(f"names client actor {kill.actor}, but this run has {have} (numbered from 0); "
                                f"name one below {n_hosts}, or raise train.actors", field="train.kill_actor")


def _train_local(scenario: Scenario, setup, n_hosts: int, on_progress, checkpoint_dir, resume):
    start = time.perf_counter()
    with collector_paused():  # torch, transformers and peft import a fifth faster
        from hsplit_actors.training.assets import local_hosts, prepare_assets
        from hsplit_actors.training.runtime import LocalRuntime
        from hsplit_actors.training.trainer import train

    import_s = time.perf_counter() - start  # this process is the coordinator here (none when already imported)
    start = time.perf_counter()
    assets = prepare_assets(scenario, setup)
    prepare_s = time.perf_counter() - start
    hosts, server = local_hosts(assets, n_hosts, setup.strategy.capability(SharedServerSet) is not None)
    tables, train_s, extra, final = train(scenario, setup, assets.start(), LocalRuntime(), hosts, server,
                                          on_progress, checkpoint_dir, resume)
    return tables, train_s, extra | {"prepare_s": prepare_s, "coordinator_import_s": import_s}, final


def _train_on_ray(scenario: Scenario, n_hosts: int, on_progress, checkpoint_dir, resume, export_to):
    crew, clean = start_actors(scenario, n_hosts), False
    coordinator, hosts, server = crew.coordinator, crew.clients, crew.server
    result = coordinator.run.remote(scenario, hosts, server, checkpoint_dir, resume, export_to)
    stop, poller = threading.Event(), None
    if on_progress is not None:
        def poll() -> None:
            while not stop.wait(0.5):
                try:
                    p = ray.get(coordinator.progress.remote())
                except ray.exceptions.RayActorError:  # the run ended (or failed) meanwhile
                    return
                if p is not None:
                    on_progress(p)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
    try:
        outcome = ray.get(result)
        for category, message in outcome[2].pop("data_warnings", []):  # said in the coordinator or the server host
            warnings.warn(message, category, stacklevel=3)
        outcome[2]["actors_reused"] = crew.reused  # the previous run's processes: nothing imported this time
        clean = outcome[2].get("faults", 0) == 0 and not scenario.train.kill_actor  # no replaced or restarted host
        stop.set()
        if poller is not None:  # the final state, after the poller's last: the bar ends full, with the metrics
            poller.join()
            final = ray.get(coordinator.progress.remote())
            if final is not None:
                on_progress(final)
        return outcome
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, ScenarioError):  # bad input found while preparing (e.g. too little data)
            raise exc.cause from None
        raise
    finally:
        stop.set()
        end_crew(crew, keep=clean)


def assigned_cpus() -> int | None:
    """The CPUs Ray assigned the caller when it runs inside a Ray task or actor (a `compare` trial holds its
    compare.cpus_per_run); None elsewhere."""
    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode == ray.WORKER_MODE:
        assigned = context.get_assigned_resources().get("CPU")
        if assigned:
            return max(1, int(assigned))
    return None


def cpus_for_this_run() -> int:
    """The CPUs a run's default client actors spread over: those Ray assigned the caller (a `compare` trial),
    else the whole cluster's."""
    return assigned_cpus() or int(ray.cluster_resources().get("CPU", 0))


def within_given_cpus(scenario: Scenario) -> Scenario:
    """The scenario to train with: inside a Ray task (a `compare` trial) the server evaluates on the CPUs the
    trial holds by default, not on every core of its machine (trials side by side would each take them all)."""
    given = assigned_cpus()
    if given is None or scenario.train.eval_threads is not None:
        return scenario
    return scenario.model_copy(update={"train": scenario.train.model_copy(update={"eval_threads": given})})


_CONNECTED_HERE: list[bool] = []  # whether connect() called ray.init in this process (disconnect() undoes it)


def connect(address: str | None) -> None:
    """Join `address` (a running cluster, with its own settings) or start a local Ray instance that listens on
    loopback only, with Ray's authentication at its default (`local_ray.py`); quiet, no dashboard."""
    if ray.is_initialized():
        return
    _CONNECTED_HERE.append(True)
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **quiet)
    else:
        with loopback_start(), lean_start():
            ray.init(address="local", num_cpus=os.cpu_count(), **quiet)
    stop_on_sigterm()  # ray.init replaced it with one that exits without cleaning up


def disconnect() -> None:
    """End what connect() started: a local Ray instance stops with its processes, a joined cluster is left (the
    actors this driver owns die with it). Ray started by the caller (a notebook, a test session) is left alone."""
    if _CONNECTED_HERE and ray.is_initialized():
        end_kept_crews()
        ray.shutdown()
    _CONNECTED_HERE.clear()
    forget_tokens()


def resume_state(directory: str | Path) -> tuple[Scenario, dict]:
    """The scenario and newest checkpoint of an interrupted run directory."""
    from hsplit_actors.scenario import load_scenario
    from hsplit_actors.training.checkpoints import load_checkpoint

    directory = Path(directory)
    if is_complete(directory):
        raise ScenarioError(f"{directory} finished already; there is nothing to resume", field="--resume")
    if not (directory / "scenario.yaml").is_file():
        raise ScenarioError(f"{directory} is not a run directory (no scenario.yaml)", field="--resume")
    checkpoint = load_checkpoint(directory / "checkpoints")
    if checkpoint is None:
        raise ScenarioError(f"{directory} has no checkpoint yet; start the run again instead", field="--resume")
    return load_scenario(directory / "scenario.yaml"), checkpoint


def _remove_if_nothing_kept(directory: Path) -> bool:
    """Remove a fresh run's directory only while it holds no checkpoint, file by file and never recursively: a
    checkpoint the coordinator renames into place meanwhile makes a removal fail, and the directory stays."""
    with contextlib.suppress(FileNotFoundError):
        (directory / "scenario.yaml").unlink()
    try:
        if (directory / "checkpoints").exists():
            for tmp in (directory / "checkpoints").glob(".round_*.pt.tmp"):  # a write cut off: never complete
                tmp.unlink(missing_ok=True)
            (directory / "checkpoints").rmdir()
        directory.rmdir()
        return True
    except OSError:  # something complete arrived: keep it
        return False


def _interrupted(directory: Path, fresh: bool, scenario: Scenario) -> Interrupted:
    """Ctrl-C or SIGTERM during training: keep what can be resumed and say how, or leave nothing. A directory
    with a complete checkpoint is never removed."""
    checkpoints = sorted((directory / "checkpoints").glob("round_*.pt"))
    if not checkpoints and (not fresh or _remove_if_nothing_kept(directory)):
        return Interrupted("interrupted before the first checkpoint; nothing was kept")
    checkpoints = sorted((directory / "checkpoints").glob("round_*.pt"))
    if not (directory / "scenario.yaml").exists():
        (directory / "scenario.yaml").write_text(dump_scenario(scenario))
    if not checkpoints:  # only a cut-off write was left, and it could not be removed
        return Interrupted(f"interrupted before the first checkpoint; {directory} holds nothing to resume")
    mark_incomplete(directory, "interrupted", checkpoints[-1])
    return Interrupted(f"interrupted; {directory} is kept up to {checkpoints[-1].name}: continue it with "
                       f"hsplit run --resume {directory}")


def run(scenario: Scenario | None, out: str | Path | None = None, address: str | None = None,
        on_progress: ProgressCallback | None = None, resume: str | Path | None = None,
        on_setup: Callable[[Setup], None] | None = None) -> tuple[Path, RunTables, dict]:
    """Train a scenario and write its run directory; with `resume`, continue an interrupted one. `on_setup` is
    told once the scenario is checked, before training starts."""
    checkpoint = None
    if resume is not None:
        saved, checkpoint = resume_state(resume)
        scenario = scenario or saved  # the caller may change how it runs (e.g. train.local), not what
        directory = Path(resume)
    else:
        directory = new_run_dir(scenario, "run", str(out) if out else None)
    setup = prepare(scenario)
    _check_run(scenario)
    if scenario.train.actors or scenario.train.local:  # else counted from the Ray cluster's CPUs once joined
        _check_faults(scenario, client_actor_count(scenario, len(setup.fleet), setup.strategy, assigned_cpus()))
    if resume is None:
        directory = claim(directory, automatic=not out)
        (directory / "scenario.yaml").write_text(dump_scenario(scenario))
    checkpoint_dir = str(directory / "checkpoints") if scenario.train.checkpoint else None
    start, started = time.perf_counter(), time.time()  # start-up counts from here: Ray's start too, where
    # on_setup starts it (the CLI)
    if on_setup is not None:
        on_setup(setup)
    ray_s = 0.0
    training = within_given_cpus(scenario)  # what the hosts are built with (scenario.yaml keeps the user's);
    # inside a trial Ray is up already, a plain run's driver is not in a task
    try:
        if scenario.train.local:
            n_hosts = client_actor_count(scenario, len(setup.fleet), setup.strategy, assigned_cpus())
            tables, train_s, extra, final = _train_local(training, setup, n_hosts, on_progress, checkpoint_dir,
                                                         checkpoint)
        else:
            connect(address or scenario.ray.address)
            ray_s = time.perf_counter() - start
            n_hosts = client_actor_count(scenario, len(setup.fleet), setup.strategy, cpus_for_this_run())
            if not scenario.train.actors:  # the count came from the cluster's CPUs: check it now
                _check_faults(scenario, n_hosts)
            export_to = str(directory) if scenario.train.export else None  # written on Ray (run.py has no torch)
            tables, train_s, extra, final = _train_on_ray(training, n_hosts, on_progress, checkpoint_dir, checkpoint,
                                                          export_to)
    except ScenarioError:
        if resume is None:  # bad input found while preparing (e.g. too little data): leave no partial directory
            shutil.rmtree(directory, ignore_errors=True)
        raise
    except KeyboardInterrupt:
        raise _interrupted(directory, resume is None, scenario) from None
    wall_s = time.perf_counter() - start
    # wall_s: Ray start (if any), actors, set-up and the clock; train_s: the clock's part (rounds, aggregation)
    extra |= {"ray": not scenario.train.local, "train_s": train_s, "startup_s": wall_s - train_s}
    # where start-up went: Ray (started or joined), the coordinator's process starting, it importing torch & co.
    # and preparing the model and data, waiting for the hosts after that (their imports and model builds, each
    # host's own share in `host_startup_s`); the rest is the calls after the last step (hosts' figures, stopping)
    prepared = extra.pop("prepare_started", None)
    parts = {"ray_s": ray_s, "coordinator_start_s": max(0.0, prepared - started - ray_s) if prepared else 0.0,
             "coordinator_import_s": extra.pop("coordinator_import_s", 0.0),
             "model_and_data_s": extra.pop("prepare_s"), "hosts_s": extra.pop("hosts_wait_s")}
    extra["startup"] = parts | {"other_s": extra["startup_s"] - sum(parts.values())}
    if scenario.train.tensorboard:
        from hsplit_actors import tensorboard

        tensorboard.write(directory, tables, extra["metric"])
    if scenario.train.export and final is not None:  # in-process; on Ray the coordinator wrote it
        from hsplit_actors.exporting import export, save_final

        save_final(directory, **final)
        extra["model"] = str(export(directory).relative_to(directory))
    write_run(directory, scenario, tables, "run", wall_s, extra, claimed=True)
    return directory, tables, extra
