"""Bytes of the frozen weights a run puts in Ray's object store for its hosts: every tensor of the state dict (as
shipped before) against each tensor once (`shareable_state`, as shipped now: GPT-2's tied LM head not again),
both serialised the way Ray stores numpy arrays (pickle protocol 5, the arrays as out-of-band buffers), in one
run. The weights are left uninitialised (their values do not change a byte), then tied as a loaded model's are.

    python bench/shipped_weights.py [--presets gpt2-small gpt2-medium gpt2-large minilm-l6 llama2-7b]
"""

from __future__ import annotations

import argparse
import pickle

import torch
from transformers.initialization import no_init_weights

from hsplit_actors.costmodel.presets import PRESETS, build_config
from hsplit_actors.model.families import family_of
from hsplit_actors.model.loading import _model_class, _quiet_transformers
from hsplit_actors.training.setup import shareable_state

TASKS = {"bert": "classification"}  # the other families are language models here


def stored_bytes(obj) -> int:
    """What Ray's object store holds for `obj`: the in-band pickle and its out-of-band buffers."""
    buffers: list[pickle.PickleBuffer] = []
    inband = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(inband) + sum(memoryview(b).nbytes for b in buffers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["gpt2-small", "gpt2-medium", "gpt2-large", "minilm-l6"])
    args = parser.parse_args()
    print(f"{'preset':12s} {'every tensor':>14s} {'each once':>12s} {'saved':>10s}  tied")
    for preset in args.presets:
        with _quiet_transformers(), no_init_weights():
            model = _model_class(TASKS.get(PRESETS[preset][0], "lm")).from_config(build_config(preset, {}),
                                                                                   dtype=torch.float32)
        model.tie_weights()  # what initialising or loading does (no_init_weights leaves it out)
        family_of(model).prepare(model, copy_weights=False)
        every = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        once, tied = shareable_state(model)
        before, after = stored_bytes(every), stored_bytes(once)
        print(f"{preset:12s} {before / 1e6:11.1f} MB {after / 1e6:9.1f} MB {(before - after) / 1e6:7.1f} MB  "
              f"{tied or '-'}", flush=True)
        del model, every, once


if __name__ == "__main__":
    main()
