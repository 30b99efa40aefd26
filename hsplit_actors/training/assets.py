"""A training run's assets: the frozen model's weights, the encoded data and the initial adapters, made once per
run. The hosts are built from them; the coordinator trains from their `Start`. This module needs transformers
and peft (through `setup` and `hosts`): on Ray the server host makes the assets, so the coordinator never does."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsplit_actors.data.samples import Samples
from hsplit_actors.preparation import Setup
from hsplit_actors.scenario.schema import Scenario
from hsplit_actors.training.executor import Start
from hsplit_actors.training.hosts import ClientHost, HostSetup, ModelRecipe, ServerHost
from hsplit_actors.training.setup import TrainingData, base_model, host_setup, initial_adapters, training_data


@dataclass
class Assets:
    """Everything the hosts are built from, and the global adapters the coordinator starts with."""

    data: TrainingData
    state: dict  # frozen weights as numpy arrays: shared zero-copy by every host on a node
    recipe: ModelRecipe
    host_setup: HostSetup
    factors: dict
    head: dict

    def start(self) -> Start:
        """The coordinator's part."""
        data = self.data
        return Start(data.partitions, data.metric, evaluation_baseline(data.metric, data.test["labels"]),
                     self.factors, self.head)

    def for_hosts(self) -> dict:
        """The hosts' part, by name: each its own object in Ray's object store."""
        return {"recipe": self.recipe, "setup": self.host_setup, "state": self.state, "train": self.data.train,
                "test": self.data.test}


def evaluation_baseline(metric: str, labels: np.ndarray) -> dict:
    """How many samples the evaluation holds and, for accuracy, the share of its most common label: what
    predicting one class scores, so a tuning point at chance can be told from one that learned."""
    if metric != "accuracy":
        return {"eval_size": int(len(labels))}
    _, counts = np.unique(labels, return_counts=True)
    return {"eval_size": int(len(labels)), "eval_majority_rate": float(counts.max() / counts.sum())}


def prepare_assets(scenario: Scenario, setup: Setup, samples: Samples | None = None) -> Assets:
    """The assets, from the run's samples (`samples`, or chosen here)."""
    data = training_data(scenario, len(setup.fleet), samples)
    model, state, recipe = base_model(scenario, setup.arch)
    factors, head, keys = initial_adapters(scenario, model, setup.strategy, setup.strategy.configure(0, setup.fleet))
    return Assets(data, state, recipe, host_setup(scenario, keys, len(setup.fleet)), factors, head)


def client_host(parts: dict) -> ClientHost:
    return ClientHost(parts["recipe"], parts["state"], parts["setup"], parts["train"])


def server_host(parts: dict, shared_server: bool) -> ServerHost:
    return ServerHost(parts["recipe"], parts["state"], parts["setup"], shared_server, parts["test"])


def local_hosts(assets: Assets, n_hosts: int, shared_server: bool) -> tuple[list[ClientHost], ServerHost]:
    """In-process hosts (`train.local`): the same classes the Ray actors wrap, built the same way."""
    parts = assets.for_hosts()
    return [client_host(parts) for _ in range(n_hosts)], server_host(parts, shared_server)
