"""A comparison's runs side by side on a Ray cluster, with Ray Tune.

Every run (variant x seed x tuning point) is one Tune trial over a grid of run keys; Tune places trials by the
CPUs each takes (`compare.cpus_per_run`), so a cluster runs as many at once as it holds (one at a time on 2
cores), keeps the experiment's state on disk (`<comparison>/ray/`) and restores it on `--resume`. A trial is
idempotent: a finished run directory is kept, an interrupted training run resumes from its checkpoint, anything
else starts again. A trial trains with the run's own machinery (`hsplit run`: Ray actors, or in-process hosts
with train.local), so it is the same run `hsplit run` gives. Tune reuses a trial's process for the next trial,
and the next run there the previous run's actors (`actors.keep_crews_in_this_worker`): the ML libraries are
imported once per trial process, not once per run; both end with the sweep.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import ray

from hsplit_actors.comparison.variants import Job
from hsplit_actors.errors import ScenarioError
from hsplit_actors.runs import is_complete

# before Tune is imported: trials keep the caller's working directory (relative data or model paths), and the
# old quiet reporter (verbose 0 prints nothing) replaces the configuration banner
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Ctrl-C reaches the command (one line, exit 130) instead of Tune's own graceful-stop handler; Tune's state on
# disk and the runs' own directories are what `--resume` continues from
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")


def execute(job: Job, root: Path, mode: str) -> Path:
    """Run one job into `root/job.key`, or keep / resume what an interrupted sweep left there."""
    from hsplit_actors.planning import plan
    from hsplit_actors.training.run import run

    directory = root / job.key
    if is_complete(directory):
        return directory
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exclusions are reported in the table (participants) instead
        if mode == "plan":
            shutil.rmtree(directory, ignore_errors=True)
            plan(job.scenario, directory)
            return directory
        if any((directory / "checkpoints").glob("*.pt")):
            run(job.scenario, resume=directory)
            return directory
        shutil.rmtree(directory, ignore_errors=True)
        run(job.scenario, directory)
    return directory


def _trial(config: dict, jobs: dict[str, Job], root: str, mode: str) -> None:
    from ray import tune

    from hsplit_actors.training.actors import keep_crews_in_this_worker

    key = config["key"]
    node = ray.get_runtime_context().get_node_id()
    keep_crews_in_this_worker()  # Tune reuses this process for the next trial: so do its runs their actors
    try:
        execute(jobs[key], Path(root), mode)
    except ScenarioError as exc:  # bad input found while preparing: reported to the driver as one line
        tune.report({"key": key, "node": node, "error": str(exc)})
        return
    tune.report({"key": key, "node": node, "error": ""})


def _watch(jobs: list[Job], root: Path, on_done: Callable[[str], None], stop: threading.Event) -> None:
    """Tell the caller each run whose directory is complete (also runs finished before a --resume, at once)."""
    told: set[str] = set()
    while True:
        last = stop.is_set()  # one more look after the sweep ends, so the final runs are told too
        for job in jobs:
            if job.key not in told and is_complete(root / job.key):
                told.add(job.key)
                on_done(job.key)
        if last:
            return
        stop.wait(1.0)


def _largest_node_cpus() -> float:
    return max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]), default=1.0) or 1.0


def sweep(jobs: list[Job], root: Path, mode: str, name: str, cpus_per_run: float,
          on_done: Callable[[str], None] | None = None) -> dict[str, str]:
    """Every job once (Ray must be connected); returns each job's node id. `name` keys Tune's state under
    `root/ray/`, so a second call with the same jobs continues the first."""
    if not jobs:
        return {}
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    for logger in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    root = root.resolve()
    cpus = min(cpus_per_run, _largest_node_cpus())  # a run must fit on one node
    trainable = tune.with_resources(
        tune.with_parameters(_trial, jobs={j.key: j for j in jobs}, root=str(root), mode=mode), {"cpu": cpus})

    # Tune restores an experiment with the grid it started with: when the jobs changed (a resumed comparison
    # given more seeds), the runs not yet finished go to a new experiment; finished runs are never run again
    keys = sorted(j.key for j in jobs)
    listing = root / "ray" / f"{name}.keys.json"
    if listing.is_file() and json.loads(listing.read_text()) != keys:
        runs = sum(1 for _ in (root / "ray").glob(f"{name}*.keys.json"))
        jobs = [j for j in jobs if not is_complete(root / j.key)]
        name, keys = f"{name}-{runs}", sorted(j.key for j in jobs)
        listing = root / "ray" / f"{name}.keys.json"
        if not jobs:
            return {}
    state = root / "ray" / name
    if tune.Tuner.can_restore(state):
        tuner = tune.Tuner.restore(str(state), trainable, resume_unfinished=True, resume_errored=True)
    else:
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text(json.dumps(keys))
        tuner = tune.Tuner(
            trainable, param_space={"key": tune.grid_search([j.key for j in jobs])},
            tune_config=tune.TuneConfig(reuse_actors=True),  # with the kept run actors (actors.py)
            run_config=tune.RunConfig(name=name, storage_path=str(root / "ray"), verbose=0,
                                      callbacks=[JsonLoggerCallback(), CSVLoggerCallback()]))
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(jobs, root, on_done, stop), daemon=True) if on_done else None
    if watcher is not None:
        watcher.start()
    try:
        results = tuner.fit()
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
    if results.errors:
        raise results.errors[0]
    nodes = {}
    for result in results:
        if result.metrics.get("error"):
            raise ScenarioError(result.metrics["error"])
        nodes[result.metrics["key"]] = result.metrics["node"]
    return nodes
