"""The floor under `hsplit run`'s start-up on this machine, beside what a run takes: Ray's start alone and the hosts'
imports alone (each in a fresh, otherwise idle process), the imports of a run's three actors side by side, and a
run's time before the first step. With `--preload MODULES`, also runs whose Ray starts its worker processes
importing MODULES (Ray's `preload_python_modules`) while Ray itself is still starting, paired with the same runs
without: does overlapping the imports with Ray's start help on this machine?

    .venv/bin/python bench/startup_floor.py --repeats 5 [--preload torch]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run_overhead import SCENARIO  # noqa: E402
from hsplit_actors.comparison.stats import mean_ci  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
HOSTS = "hsplit_actors.training.assets"  # torch, transformers, peft and the hosts' code
COORDINATOR = "torch, pandas, hsplit_actors.training.trainer"  # what the coordinator imports (actors.py)

RAY_START = """
import time
from hsplit_actors.training.run import connect, disconnect
start = time.perf_counter()
connect(None)
print(time.perf_counter() - start)
disconnect()
"""

IMPORTS = """
import time
start = time.perf_counter()
import {modules}
print(time.perf_counter() - start)
"""

# a run through the API with Ray started here (as connect() does, plus `preload`): before the first step
RUN = """
import logging, os, sys, time
start = time.perf_counter()
import ray
from hsplit_actors import run
from hsplit_actors.training.local_ray import lean_start, loopback_start
preload = [m for m in sys.argv[3].split(",") if m]
config = {{"_system_config": {{"preload_python_modules": preload}}}} if preload else {{}}
with loopback_start(), lean_start():
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, **config)
ray_s = time.perf_counter() - start
meta = run(sys.argv[1], out=sys.argv[2]).meta
print(ray_s + meta["startup_s"] - meta["startup"]["other_s"])
"""


def timed(code: str, *args: str) -> float:
    """The figure a fresh Python process prints (its last line)."""
    done = subprocess.run([sys.executable, "-c", code, *args], env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[-1])


def side_by_side() -> float:
    """Wall time of the three imports a fresh 2-core run makes at once (coordinator, server host, client host)."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", IMPORTS.format(modules=m)], env=ENV,
                              stdout=subprocess.DEVNULL) for m in (COORDINATOR, HOSTS, HOSTS)]
    if any(p.wait() for p in procs):
        raise RuntimeError("an import failed")
    return time.perf_counter() - start


def run_first_step(scenario: Path, preload: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return timed(RUN.format(), str(scenario), f"{tmp}/run", preload)


def show(label: str, values: list[float]) -> float:
    mean, half, _ = mean_ci(pd.Series(values))
    print(f"{label:74s} {mean:6.2f} ± {half:4.2f} s", flush=True)
    return mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--preload", default="", help="comma-separated modules for Ray's workers to preload")
    args = parser.parse_args()
    raw = json.loads(json.dumps(SCENARIO)) | {"local_iterations": args.iterations}
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "scenario.yaml"
        scenario.write_text(yaml.safe_dump(raw))
        for i in range(args.repeats):
            measured = {"ray": lambda: timed(RAY_START), "import": lambda: timed(IMPORTS.format(modules=HOSTS)),
                        "side_by_side": side_by_side, "run": lambda: run_first_step(scenario, "")}
            if args.preload:
                measured["preload"] = lambda: run_first_step(scenario, args.preload)
            order = list(measured) if i % 2 == 0 else list(reversed(measured))
            for name in order:
                figures.setdefault(name, []).append(measured[name]())
            print(f"repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in figures.items()), flush=True)
    print(f"{os.cpu_count()} CPUs, {args.repeats} repeats (95% CI of the mean)")
    ray_s = show("Ray's start alone (connect, fresh process)", figures["ray"])
    import_s = show("the hosts' imports alone (torch, transformers, peft; fresh idle process)", figures["import"])
    show("three imports side by side (coordinator, server host, client host)", figures["side_by_side"])
    print(f"{'floor: Ray, then one host import (nothing else, perfect overlap)':74s} {ray_s + import_s:6.2f} s")
    show("hsplit run via the API: before the first step", figures["run"])
    if args.preload:
        show(f"the same with Ray's workers preloading {args.preload}", figures["preload"])
        show("paired difference (without - with preload)",
             [a - b for a, b in zip(figures["run"], figures["preload"], strict=True)])


if __name__ == "__main__":
    main()
