"""`hsplit run` against Flower 1.42 on the same job, default against default, whole commands timed side by side.

The job (issue 20): FedAvg of rank-4 query/value LoRA on pretrained MiniLM (FedIT), SST-2 iid, 5 clients,
5 rounds x 10 local iterations of batch 16 x 48, the global model evaluated after every round on GLUE's 872 dev
sentences. Flower's side is `bench/flower_app.py` in its own virtual environment (flwr pins its own Ray), run
with `run_simulation`'s defaults; ours is `hsplit run JOB` with ours. The two alternate, `--repeats` times each,
each starting its own Ray; the figure is the median wall time of the whole command.

    make bench-flower            # builds .venv-flower once, then runs this
    python bench/flower_vs_hsplit.py --flower-python .venv-flower/bin/python [--repeats 3] [--local]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
JOB = {
    "name": "flower_job", "seed": 0,
    "model": {"preset": "minilm-l6"},
    "data": {"dataset": "sst2", "batch_size": 16, "seq_len": 48, "samples_per_client": 320,
             "partition": {"kind": "iid"}},
    "fleet": [{"profile": "orin_nano", "count": 5}],
    "method": {"name": "fedit", "rank": 4, "targets": ["query", "value"]},
    "rounds": 5, "local_iterations": 10, "progress": False,
    "train": {"checkpoint": False, "export": False},  # Flower's app keeps no checkpoints and exports nothing
}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed:\n{done.stderr[-3000:]}")
    return wall


def flower(python: str, job: Path, out: Path) -> dict:
    result = out / "flower.json"
    wall = timed([python, str(ROOT / "bench" / "flower_app.py"), str(job), str(result)],
                 ENV | {"PYTHONPATH": str(ROOT)})
    accuracy = json.loads(result.read_text())["accuracy"]
    return {"wall_s": wall, "accuracy": [accuracy[str(r)] for r in range(1, JOB["rounds"] + 1)]}


def hsplit(job: Path, out: Path, local: bool) -> dict:
    import pandas as pd

    run = out / ("local" if local else "ray")
    wall = timed([str(Path(sys.executable).with_name("hsplit")), "run", str(job), "--out", str(run), "--quiet",
                  *(["--local"] if local else [])], ENV)
    meta = json.loads((run / "meta.json").read_text())
    rounds = pd.read_parquet(run / "rounds.parquet")
    return {"wall_s": wall, "accuracy": rounds["eval_metric"].tolist(), "startup_s": meta["startup_s"],
            "train_s": meta["train_s"], "client_actors": meta["client_actors"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flower-python", required=True, help="python of a venv with flwr[simulation]==1.42.0")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--local", action="store_true", help="also time `hsplit run --local` (hosts in-process)")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"flower": [], "hsplit": [], "hsplit --local": []}
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.yaml"
        job.write_text(yaml.safe_dump(JOB, sort_keys=False))
        for i in range(args.repeats):
            order = ["flower", "hsplit"] if i % 2 == 0 else ["hsplit", "flower"]  # interleaved, alternating
            for name in order + (["hsplit --local"] if args.local else []):
                out = Path(tmp) / f"{name.replace(' --', '_')}_{i}"
                out.mkdir()
                result = (flower(args.flower_python, job, out) if name == "flower"
                          else hsplit(job, out, name.endswith("local")))
                runs[name].append(result)
                print(f"  {name:15s} run {i + 1}: {result['wall_s']:7.1f} s, accuracy after each round "
                      f"{', '.join(f'{a:.4f}' for a in result['accuracy'])}", flush=True)
    base = statistics.median(r["wall_s"] for r in runs["flower"])
    print(f"\nFedIT, MiniLM r=4 q/v, SST-2 iid, 5 clients, 5 rounds x 10 iterations; median of {args.repeats}:")
    for name, results in runs.items():
        if not results:
            continue
        wall = statistics.median(r["wall_s"] for r in results)
        extra = ""
        if name != "flower":
            extra = (f"; start-up {statistics.median(r['startup_s'] for r in results):.1f} s, train "
                     f"{statistics.median(r['train_s'] for r in results):.1f} s, "
                     f"{results[0]['client_actors']} client actor(s)")
        print(f"  {name:15s} {wall:7.1f} s   {wall / base:.2f}x Flower   final accuracy "
              f"{statistics.median(r['accuracy'][-1] for r in results):.4f}{extra}")


if __name__ == "__main__":
    main()
