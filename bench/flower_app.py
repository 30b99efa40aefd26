"""The Flower 1.42 side of `bench/flower_vs_hsplit.py`: the same job as `hsplit run` of a FedIT scenario, written
as a Flower user would (ClientApp / ServerApp, the Message API, `FedAvg`, the Ray simulation engine with its
default resources: 2 CPUs per client).

Same job: the model, its classifier head and the encoded rows come from the same code as `hsplit run`
(`training.setup`), every client's batches are drawn in the same seeded order (a new permutation of its samples
each epoch, as `VirtualClient.next_batch`), LoRA of the same rank on the same matrices (peft, via `apply_lora`),
AdamW with the same rate and weight decay, FedAvg of the adapters and the head weighted by samples, the global
model evaluated on the server after every round on the same rows. What a Flower user would write differently from
hsplit's FedIT, and does here: a fresh AdamW each round (hsplit keeps each client's moments), and the adapters
start from peft's own initialisation.

Runs only in a virtual environment with `flwr[simulation]==1.42.0` (it pins its own Ray): `make bench-flower`.

    python bench/flower_app.py JOB.yaml RESULT.json
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from hsplit_actors.model import apply_lora, trainable_parameters
from hsplit_actors.preparation import prepare
from hsplit_actors.scenario import parse_scenario
from hsplit_actors.training.setup import base_model, training_data

# where the job's scenario is and where the result goes: `run_simulation` passes no run config, and Ray's workers
# inherit the environment of the process that started Ray
JOB, RESULT = "HSPLIT_FLOWER_JOB", "HSPLIT_FLOWER_RESULT"


@functools.cache
def job(path: str):
    """The scenario, its encoded data and the model with LoRA, built once per process (a Flower client actor is
    reused across rounds and clients)."""
    scenario = parse_scenario(Path(path).read_text())
    setup = prepare(scenario)
    data = training_data(scenario, len(setup.fleet))
    model, _, _ = base_model(scenario, setup.arch)
    method = scenario.method
    apply_lora(model, {(b, m): method.rank for b in range(setup.arch.n_layers) for m in method.targets},
               seed=scenario.seed)
    return scenario, data, model


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def batch_rows(indices: np.ndarray, seed: int, cid: int, step: int, size: int) -> np.ndarray:
    """Rows of a client's `step`-th batch: its samples in a seeded permutation per epoch, read as one stream."""
    start, end = step * size, (step + 1) * size
    epochs = range(start // len(indices), (end - 1) // len(indices) + 1)
    stream = np.concatenate([np.random.default_rng([seed, cid, e]).permutation(indices) for e in epochs])
    offset = epochs[0] * len(indices)
    return stream[start - offset:end - offset]


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    scenario, data, model = job(os.environ[JOB])
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict(), strict=False)
    model.train()
    cid, round_ = int(context.node_config["partition-id"]), int(msg.content["config"]["server-round"])
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=scenario.train.lr,
                                  weight_decay=scenario.train.weight_decay)
    iterations, size = scenario.local_iterations, scenario.data.batch_size
    losses = []
    for it in range(iterations):
        rows = batch_rows(data.partitions[cid], scenario.seed, cid, (round_ - 1) * iterations + it, size)
        logits = model(input_ids=torch.from_numpy(data.train["input_ids"][rows]),
                       attention_mask=torch.from_numpy(data.train["attention_mask"][rows])).logits
        loss = F.cross_entropy(logits, torch.from_numpy(data.train["labels"][rows]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    content = RecordDict({"arrays": ArrayRecord(trainable_state(model)),
                          "metrics": MetricRecord({"train_loss": float(np.mean(losses)),
                                                   "num-examples": len(data.partitions[cid])})})
    return Message(content=content, reply_to=msg)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    scenario, data, model = job(os.environ[JOB])
    accuracy: dict[int, float] = {}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:  # hsplit evaluates after each round only: the same work
            return None
        model.load_state_dict(arrays.to_torch_state_dict(), strict=False)
        model.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(data.test["labels"]), 64):
                part = slice(start, start + 64)
                logits = model(input_ids=torch.from_numpy(data.test["input_ids"][part]),
                               attention_mask=torch.from_numpy(data.test["attention_mask"][part])).logits
                correct += int((logits.argmax(-1).numpy() == data.test["labels"][part]).sum())
        accuracy[server_round] = correct / len(data.test["labels"])
        return MetricRecord({"accuracy": accuracy[server_round]})

    n = len(data.partitions)
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(trainable_state(model)), num_rounds=scenario.rounds,
                   evaluate_fn=evaluate)
    with open(os.environ[RESULT], "w") as out:
        json.dump({"accuracy": accuracy}, out)


if __name__ == "__main__":
    from flwr.simulation import run_simulation

    os.environ[JOB], os.environ[RESULT] = sys.argv[1], sys.argv[2]
    # the apps by module name, so that Ray's workers import them (functions of __main__ would not unpickle)
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    import flower_app

    n_clients = sum(group["count"] for group in yaml.safe_load(Path(sys.argv[1]).read_text())["fleet"])
    run_simulation(server_app=flower_app.server_app, client_app=flower_app.client_app, num_supernodes=n_clients)
