"""`hsplit validate` on a fleet file of N one-device entries (issue 13: 140,000 took 42 s): each stage timed, with
PyYAML's `safe_load` (what scenarios were read with before) measured on the same text beside the loader now used.

    python bench/validate_large_fleet.py [--entries 140000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import yaml

from hsplit_actors import strict_yaml
from hsplit_actors.cli import main as cli
from hsplit_actors.comparison.variants import check_all
from hsplit_actors.preparation import prepare
from hsplit_actors.scenario.load import validate_data
from hsplit_actors.workload import check

HEAD = """name: large
model: {preset: gpt2-small, overrides: {n_layer: 4, n_embd: 128, n_head: 4}}
data: {dataset: synthetic, batch_size: 4, seq_len: 32}
method: {name: sfl, split_point: 2, rank: 4}
rounds: 2
local_iterations: 3
progress: false
fleet:
"""
PROFILES = ("jetson_nano", "orin_nano", "agx_orin", "phone_sd8gen2")


def fleet_text(entries: int) -> str:
    """Block-style YAML as `yaml.safe_dump` writes a generated fleet: four keys per entry."""
    lines = [f"- profile: {PROFILES[i % 4]}\n  flops: {1e11 + 7919 * i:.0f}\n  uplink_mbps: {5 + i % 95}.5\n"
             f"  availability: 0.8\n" for i in range(entries)]
    return HEAD + "".join(lines)


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=140_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    text = fleet_text(args.entries)
    print(f"{args.entries:,} fleet entries, {len(text) / 2**20:.1f} MiB of YAML; median of {args.repeat}")
    old_s, old = timed(lambda: yaml.safe_load(text), 1)
    new_s, raw = timed(lambda: strict_yaml.load(text), args.repeat)
    assert raw == old, "the strict loader must read what safe_load reads"
    schema_s, scenario = timed(lambda: validate_data(raw, "bench", text), args.repeat)
    work_s, _ = timed(lambda: check(scenario), args.repeat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepare_s, _ = timed(lambda: prepare(scenario), args.repeat)
    variants_s, runs = timed(lambda: check_all(scenario), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.yaml"
        path.write_text(text)
        whole_s, _ = timed(lambda: cli(["validate", str(path)]), args.repeat)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{'stage':<44} {'s':>7}")
    rows = [("YAML: yaml.safe_load (before)", old_s), ("YAML: strict_yaml.load (now)", new_s),
            ("schema + cross-field checks", schema_s), ("work estimate", work_s),
            ("fleet sampled + feasibility (prepare)", prepare_s), (f"the {runs} runs compare would make", variants_s),
            ("`hsplit validate`, in process, whole", whole_s)]
    for name, seconds in rows:
        print(f"{name:<44} {seconds:>7.2f}")
    print(f"YAML speed-up {old_s / new_s:.1f}x; peak RSS of this process {peak:.2f} GiB")


if __name__ == "__main__":
    main()
