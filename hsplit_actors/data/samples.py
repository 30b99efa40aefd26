"""The samples a training run uses, chosen from the data files: the clients' (n_clients x samples_per_client,
seeded) with each client's share, and the evaluation's (the test set, or a validation split held out of the
training file first). Handed on as plain columns, so that whoever encodes them (the server host, which has the
tokenizer) needs no pandas: on Ray the coordinator chooses them while the server host is still importing."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from hsplit_actors.data import DATA_DIR, DataShareWarning, require_real_data, train_file
from hsplit_actors.data.partition import partition
from hsplit_actors.errors import ScenarioError
from hsplit_actors.scenario.schema import Scenario

COLUMNS = {"sst2": ("sentence", "label"), "e2e": ("mr", "ref")}  # what encoding reads of each data set
METRICS = {"sst2": "accuracy", "e2e": "perplexity"}  # what eval_metric holds


@dataclass
class Samples:
    dataset: str
    train: dict[str, list]  # the clients' samples, COLUMNS of the data set
    evaluation: dict[str, list]
    partitions: list[np.ndarray]  # each client's rows of `train`
    metric: str


def draw_samples(n: int, held_out: int, wanted: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (sorted) of the validation split and of the clients' samples: one permutation, the validation
    rows first, so the two never overlap (and with nothing held out the clients get what they always got)."""
    order = rng.permutation(n)
    return np.sort(order[:held_out]), np.sort(order[held_out:held_out + wanted])


def choose_samples(scenario: Scenario, n_clients: int) -> Samples:
    """Read the data set's files, draw the clients' samples and the evaluation's, and partition the clients'."""
    from hsplit_actors.data.datasets import read_e2e, read_sst2

    data = scenario.data
    require_real_data(data.dataset)
    path = train_file(data.dataset, data.path)
    rng = np.random.default_rng(scenario.seed)
    if data.dataset == "sst2":
        frame, test = read_sst2(path), read_sst2(DATA_DIR / "sst2" / "test.tsv")
    else:
        frame, test = read_e2e(path), read_e2e(DATA_DIR / "e2e" / "testset_w_refs.csv")
    held_out = data.validation_samples
    if held_out >= len(frame):
        raise ScenarioError(f"data.validation_samples {held_out} leaves nothing of {len(frame)} training samples for "
                            "the clients; lower it", field="data.validation_samples")
    wanted = min(len(frame) - held_out, n_clients * data.samples_per_client)
    if wanted < n_clients * data.samples_per_client:
        warnings.warn(f"{n_clients} clients x data.samples_per_client {data.samples_per_client} exceed the "
                      f"{wanted} samples of {path}; the clients share those (about {wanted // n_clients} each)",
                      DataShareWarning, stacklevel=2)
    if wanted < n_clients:
        raise ScenarioError(f"{len(frame) - held_out} samples cannot give each of {n_clients} clients one",
                            field="data.samples_per_client")
    validation, used = draw_samples(len(frame), held_out, wanted, rng)
    evaluation = (frame.iloc[validation].reset_index(drop=True) if scenario.train.evaluate_on == "validation"
                  else test.head(scenario.train.eval_samples))
    frame = frame.iloc[used].reset_index(drop=True)
    keys = None
    if data.partition.kind == "dirichlet":
        column = "label" if data.dataset == "sst2" else data.partition.by
        keys = frame[column].fillna("<none>").astype(str).to_numpy()
    parts = partition(data.partition.kind, len(frame), n_clients, scenario.seed, data.partition.alpha, keys)
    columns = COLUMNS[data.dataset]
    return Samples(data.dataset, {c: frame[c].tolist() for c in columns}, {c: evaluation[c].tolist() for c in columns},
                   parts, METRICS[data.dataset])
