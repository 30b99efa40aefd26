"""A host's model build with and without random initialisation of the weights it replaces at once.

Each host builds the frozen model from its config and then takes the shared weights (`hosts.build_model`); the
random initialisation in between is thrown away, and so were GPT-2's matrices copied into Linear layout. This
times `from_config` and the family's `prepare` as `build_model` now runs them (under transformers'
`no_init_weights`, the matrices left as views) against the same initialising and copying, alternating,
for each preset given; one process, the threads given.

    python bench/host_build.py [--presets minilm-l6 gpt2-small gpt2-large] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from transformers.initialization import no_init_weights

from hsplit_actors.costmodel.presets import PRESETS, build_config
from hsplit_actors.model.families import family_of
from hsplit_actors.model.loading import _model_class, _quiet_transformers

TASKS = {"bert": "classification"}  # the other families are language models here


def one_build(preset: str, initialise: bool) -> float:
    config = build_config(preset, {})
    task = TASKS.get(PRESETS[preset][0], "lm")
    start = time.perf_counter()
    with _quiet_transformers(), (contextlib.nullcontext() if initialise else no_init_weights()):
        model = _model_class(task).from_config(config, dtype=torch.float32)
        family_of(model).prepare(model, copy_weights=initialise)  # a skeleton's matrices as views, now
    wall = time.perf_counter() - start
    del model
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["minilm-l6", "gpt2-small", "gpt2-large"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'preset':12s} {'initialised':>12s} {'not (now)':>10s}   ratio   (medians of {args.repeats})")
    for preset in args.presets:
        times: dict[bool, list[float]] = {True: [], False: []}
        for i in range(args.repeats):
            for initialise in ((True, False) if i % 2 == 0 else (False, True)):
                times[initialise].append(one_build(preset, initialise))
        before, after = (statistics.median(times[k]) for k in (True, False))
        print(f"{preset:12s} {before:10.3f} s {after:8.3f} s   {after / before:.4f}")


if __name__ == "__main__":
    main()
