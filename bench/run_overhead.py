"""`hsplit run` against a plain PyTorch loop doing the same split-LoRA training (issue 4's benchmark).

Same model (pretrained MiniLM, split after block 3, LoRA r=8 on query/value), same batches of the same clients in
the same order, same number of steps (4 clients x 20 iterations, one round), no evaluation. The plain loop is one
process: client forward, server forward/loss/backward, client backward, both optimiser steps. `hsplit run` is the
whole command: Ray start, actors, model and data set-up, the SimPy engine, aggregation, tables; once starting
its own Ray instance and once joining one already running (`ray start --head` beforehand, as on a cluster).
Both are timed as whole commands from outside (interpreter start and imports included), `--pairs` times in
alternating order; the ratio's median and 95% CI over the pairs is the figure.

Memory: proportional set size (PSS: shared pages counted once) of the whole run — driver and every Ray process —
sampled every 0.2 s, with 1, 4 and 16 virtual clients: the frozen base must not be copied per client.

    python bench/run_overhead.py [--pairs 5] [--no-memory]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = {
    "name": "overhead", "seed": 0,
    "model": {"preset": "minilm-l6"},
    "data": {"dataset": "sst2", "batch_size": 16, "seq_len": 48, "samples_per_client": 320},
    "fleet": [{"profile": "orin_nano", "count": 4}],
    "method": {"name": "sfl", "split_point": 3, "rank": 8, "targets": ["query", "value"]},
    "rounds": 1, "local_iterations": 20, "progress": False,
    "train": {"eval_every": 1000, "checkpoint": False, "eval_samples": 16},
}


def plain_loop(raw: dict) -> tuple[float, float]:
    """The same training, written the way one would without this framework: (steps only, whole incl. set-up)."""
    whole_start = time.perf_counter()
    import torch

    from hsplit_actors.model import SplitModel, apply_lora, trainable_parameters
    from hsplit_actors.preparation import prepare
    from hsplit_actors.scenario import parse_scenario
    from hsplit_actors.training.setup import base_model, training_data

    scenario = parse_scenario(yaml.safe_dump(raw))
    setup = prepare(scenario)
    data = training_data(scenario, len(setup.fleet))
    model, _, _ = base_model(scenario, setup.arch)
    apply_lora(model, {(b, m): 8 for b in range(6) for m in ("query", "value")})
    model.train()  # from_pretrained returns eval mode; training means dropout on, as in the hosts
    split = SplitModel(model, 3)
    opts = [torch.optim.AdamW(trainable_parameters(p), lr=2e-3) for p in (split.client, split.server)]
    ids, mask, labels = (torch.from_numpy(data.train[k]) for k in ("input_ids", "attention_mask", "labels"))
    batch = scenario.data.batch_size
    start = time.perf_counter()
    for it in range(scenario.local_iterations):
        for part in data.partitions:  # clients interleave, as on the virtual clock
            index = torch.as_tensor(part[(it * batch) % len(part):][:batch])
            split.step(ids[index], mask[index], labels[index])
            for opt in opts:
                opt.step()
                opt.zero_grad()
    end = time.perf_counter()
    return end - start, end - whole_start


def pss_of_tree(root: int) -> int:
    import psutil

    total = 0
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_full_info().pss
    return total


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}


def hsplit_run(raw: dict, address: str | None = None) -> dict:
    """`hsplit run` in a child process (its own Ray, or joining `address`); wall time and peak PSS of the whole
    process tree."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(yaml.safe_dump(raw))
        join = ["--address", address] if address else []
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "hsplit_actors.cli", "run", str(path), "--out",
                                 str(Path(tmp) / "run"), "--quiet", *join], env=ENV, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak = 0

        def sample() -> None:
            nonlocal peak
            while proc.poll() is None:
                peak = max(peak, pss_of_tree(proc.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        out, err = proc.communicate()
        sampler.join()
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(err[-2000:])
        import pandas as pd

        rounds = pd.read_parquet(Path(tmp) / "run" / "rounds.parquet")
        meta = json.loads((Path(tmp) / "run" / "meta.json").read_text())
    return {"wall_s": wall, "round_s": float(rounds["wall_s"].sum()), "peak_pss_gb": peak / 2**30,
            "run_s": meta["wall_s"], "startup_s": meta["startup_s"], "train_s": meta["train_s"],
            "busy": meta["host_busy_s"], "startup": meta["startup"]}


@contextlib.contextmanager
def running_cluster():
    """A Ray instance started beforehand (`ray start --head`), as on a cluster: yields its address."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray_cli, "start", "--head", "--num-cpus", str(os.cpu_count()), "--include-dashboard=false",
                    "--disable-usage-stats"], env=ENV, check=True, capture_output=True)
    try:
        yield "auto"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=ENV, capture_output=True)


def plain_script() -> dict:
    """The plain loop as a command of its own (`--plain`), timed from outside as `hsplit run` is."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--plain"], env=ENV, cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return {"wall_s": time.perf_counter() - start} | json.loads(done.stdout.splitlines()[-1])


def ci95(values: list[float]) -> str:
    import pandas as pd

    from hsplit_actors.comparison.stats import mean_ci

    if len(values) < 2:
        return ""
    mean, half, _ = mean_ci(pd.Series(values))
    return f", mean {mean:.3f} +- {half:.3f} (95% CI)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1, help="plain script and hsplit run, alternating")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory part")
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)  # the plain script itself
    args = parser.parse_args()
    if args.plain:
        steps_s, whole_s = plain_loop(SCENARIO)
        print(json.dumps({"steps_s": steps_s, "inside_s": whole_s}))
        return
    pairs = []
    for i in range(args.pairs):
        first, second = (plain_script, lambda: hsplit_run(SCENARIO)) if i % 2 == 0 else \
            (lambda: hsplit_run(SCENARIO), plain_script)
        a, b = first(), second()
        pairs.append((a, b) if i % 2 == 0 else (b, a))
    ratios = [r["wall_s"] / p["wall_s"] for p, r in pairs]
    before_step = [r["startup_s"] - r["startup"]["other_s"] for _, r in pairs]
    script, run = pairs[0]
    plain = script["steps_s"]
    steps = 4 * 20
    print(f"{steps} split steps (MiniLM, 4 clients x 20 iterations, batch 16 x 48)")
    print(f"  plain PyTorch loop:               {plain:7.2f} s   (the whole script as a command: "
          f"{script['wall_s']:.2f} s)")
    print(f"  hsplit run, the round:            {run['round_s']:7.2f} s   ratio {run['round_s'] / plain:.2f}")
    print(f"  hsplit run, whole command:        {run['wall_s']:7.2f} s   ratio {run['wall_s'] / plain:.2f} "
          f"(to the plain script as a command: {ratios[0]:.2f})")
    if len(pairs) > 1:
        walls = {name: ", ".join(f"{x[name == 'hsplit run']['wall_s']:.1f}" for x in pairs)
                 for name in ("plain script", "hsplit run")}
        print(f"  {len(pairs)} pairs, alternating: plain script {walls['plain script']} s; hsplit run "
              f"{walls['hsplit run']} s")
        print(f"    whole command / plain script: {', '.join(f'{x:.3f}' for x in ratios)}; median "
              f"{statistics.median(ratios):.3f}{ci95(ratios)}")
        print(f"    before the first step: {', '.join(f'{x:.2f}' for x in before_step)} s; median "
              f"{statistics.median(before_step):.2f} s{ci95(before_step)}")
    outside = run["wall_s"] - run["run_s"]
    parts = run["startup"]
    print(f"    where it goes: outside the clock {run['startup_s']:.2f} s (Ray's start {parts['ray_s']:.2f}, the "
          f"coordinator's process starting {parts['coordinator_start_s']:.2f}, its imports "
          f"{parts['coordinator_import_s']:.2f}, then until the model and data are made (by the server actor, its "
          f"own imports included) {parts['model_and_data_s']:.2f}, "
          f"waiting for the hosts after that {parts['hosts_s']:.2f}, calls after the last step "
          f"{parts['other_s']:.2f}); the clock (rounds, aggregation, tables) {run['train_s']:.2f} s; outside the "
          f"run (interpreter, imports, validation, writing the run directory, Ray shutdown) {outside:.2f} s")
    client = {k: sum(h.get(k, 0.0) for h in run["busy"]["client_hosts"]) for k in ("client_forward",
                                                                                  "client_backward")}
    server = run["busy"]["server"].get("server_step", 0.0)
    print(f"    inside the round: client actor busy {sum(client.values()):.2f} s (forward "
          f"{client['client_forward']:.2f}, backward {client['client_backward']:.2f}), server actor busy "
          f"{server:.2f} s")
    with running_cluster() as address:
        joined = hsplit_run(SCENARIO, address)
    print(f"  hsplit run --address (Ray already running): {joined['wall_s']:7.2f} s   ratio "
          f"{joined['wall_s'] / plain:.2f} (to the plain script as a command: "
          f"{joined['wall_s'] / script['wall_s']:.2f}); "
          f"round {joined['round_s']:.2f} s")
    raw = json.loads(json.dumps(SCENARIO))
    raw["train"] |= {"local": True, "threads_per_actor": 2}
    local = hsplit_run(raw)
    busy = sum(sum(h.values()) for h in local["busy"]["client_hosts"]) + sum(local["busy"]["server"].values())
    print(f"  hsplit run --local, 2 threads:    {local['wall_s']:7.2f} s   ratio {local['wall_s'] / plain:.2f} "
          f"(to the plain script as a command: {local['wall_s'] / script['wall_s']:.2f}); "
          f"round {local['round_s']:.2f} s, "
          f"ratio {local['round_s'] / plain:.2f} (hosts busy {busy:.2f} s)")
    if args.no_memory:
        return
    print("memory (peak PSS of driver + all Ray processes), 4 iterations each:")
    for recompute in (False, True):
        peaks = {}
        for n in (1, 4, 16):
            raw = json.loads(json.dumps(SCENARIO))
            raw["fleet"][0]["count"] = n
            raw["local_iterations"] = 4
            raw["train"]["recompute_activations"] = recompute
            peaks[n] = hsplit_run(raw)["peak_pss_gb"]
        per_client = (peaks[16] - peaks[1]) / 15 * 1024
        print(f"  recompute_activations={recompute!s:<5}  1: {peaks[1]:.2f} GB   4: {peaks[4]:.2f} GB   "
              f"16: {peaks[16]:.2f} GB   ({per_client:.0f} MB per extra virtual client)")


if __name__ == "__main__":
    main()
