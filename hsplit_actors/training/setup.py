"""Everything a training run needs before the clock starts: the model's frozen weights (to share), the encoded
data and its partition across the fleet, and the global initial adapters."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from hsplit_actors.costmodel import ModelArch
from hsplit_actors.data import DATA_DIR, DataShareWarning, TruncatedTextWarning, require_real_data, train_file
from hsplit_actors.data.datasets import IGNORE, Encoded, encode_e2e, encode_sst2, read_e2e, read_sst2
from hsplit_actors.data.partition import partition
from hsplit_actors.errors import ScenarioError
from hsplit_actors.methods.aggregate import Key
from hsplit_actors.methods.base import Assignment, Strategy
from hsplit_actors.model.families import family_of
from hsplit_actors.model.loading import load_model
from hsplit_actors.scenario.schema import Scenario
from hsplit_actors.training.hosts import HostSetup, ModelRecipe
from hsplit_actors.training.recipe import recipes
from hsplit_actors.training.slots import head_parameters


@dataclass
class TrainingData:
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    partitions: list[np.ndarray]
    metric: str  # what eval_metric holds: accuracy or perplexity


def _arrays(enc: Encoded) -> dict[str, np.ndarray]:
    return {"input_ids": enc.input_ids.numpy(), "attention_mask": enc.attention_mask.numpy(),
            "labels": enc.labels.numpy()}


def draw_samples(n: int, held_out: int, wanted: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (sorted) of the validation split and of the clients' samples: one permutation, the validation
    rows first, so the two never overlap (and with nothing held out the clients get what they always got)."""
    order = rng.permutation(n)
    return np.sort(order[:held_out]), np.sort(order[held_out:held_out + wanted])


def training_data(scenario: Scenario, n_clients: int) -> TrainingData:
    """Encode only the samples the fleet uses (n_clients x samples_per_client, seeded) and partition them; the
    evaluation set, or the validation split held out of the training file before the clients' samples are drawn."""
    from hsplit_actors.data.tokenizers import bert_tokenizer, gpt2_tokenizer

    data = scenario.data
    require_real_data(data.dataset)
    path = train_file(data.dataset, data.path)
    rng = np.random.default_rng(scenario.seed)
    if data.dataset == "sst2":
        frame, tok, encode, metric = read_sst2(path), bert_tokenizer(), encode_sst2, "accuracy"
        test = read_sst2(DATA_DIR / "sst2" / "test.tsv")
    else:
        frame, tok, encode, metric = read_e2e(path), gpt2_tokenizer(), encode_e2e, "perplexity"
        test = read_e2e(DATA_DIR / "e2e" / "testset_w_refs.csv")
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
    train, test = encode(frame, tok, data.seq_len), encode(evaluation, tok, data.seq_len)
    if data.dataset == "e2e":
        check_texts(train, test, data.seq_len)
    return TrainingData(_arrays(train), _arrays(test), parts, metric)


def check_texts(train: Encoded, test: Encoded, seq_len: int) -> None:
    """E2E samples whose prompt fills `seq_len` keep no token of their text: they train nothing (the loss over
    no token is NaN, its gradient zero) and are not scored. None left to train on is an error; some, a warning."""
    empty = [int(((d.labels != IGNORE).sum(dim=1) == 0).sum()) for d in (train, test)]
    if empty[0] == len(train):
        raise ScenarioError(f"data.seq_len {seq_len} leaves no token of the text in any of the {len(train)} "
                            "training samples (their prompts fill it); raise it", field="data.seq_len")
    if any(empty):
        warnings.warn(f"data.seq_len {seq_len} ends {empty[0]} of {len(train)} training samples and {empty[1]} of "
                      f"{len(test)} evaluation samples before their text begins: they have nothing to learn or "
                      "score; raise data.seq_len", TruncatedTextWarning, stacklevel=3)


def base_model(scenario: Scenario, arch: ModelArch):
    """The frozen model, its shareable weights (numpy, zero-copy) and how hosts rebuild it."""
    spec = scenario.model
    torch.manual_seed(scenario.seed)  # a new classifier head is initialised here
    model = load_model(task=arch.task, preset=spec.preset, path=spec.path, weights=spec.weights,
                       overrides=spec.overrides, seed=scenario.seed, num_labels=arch.num_labels)
    family_of(model).prepare(model)
    state, tied = shareable_state(model)
    return model, state, ModelRecipe(model.config, arch.task, tied)


def shareable_state(model) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The weights as numpy arrays, each tensor once: a weight tied to another (GPT-2's LM head is its input
    embedding, 154 MB in GPT-2 small) is named in `tied` (name -> the name shipped) instead of shipped again,
    which would have put it twice in the object store and on the server's GPU."""
    state, tied, first = {}, {}, {}
    for name, tensor in model.state_dict().items():
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if where in first and tensor.numel():  # empty tensors may all report address 0
            tied[name] = first[where]
            continue
        first[where] = name
        state[name] = tensor.detach().contiguous().numpy()
    return state, tied


def initial_adapters(scenario: Scenario, model, strategy: Strategy, assignment: Assignment):
    """The global adapters the method starts from, the trainable head, and every (block, matrix) that needs a
    LoRA slot on the hosts."""
    try:
        factors = strategy.global_init(assignment)
    except ValueError as exc:
        raise ScenarioError(str(exc), field="method.rank") from None
    head = {name: p.detach().clone() for name, p in head_parameters(model).items()}
    return factors, head, tuple(sorted(strategy.adapter_keys(assignment)))


def host_setup(scenario: Scenario, keys: tuple[Key, ...], n_clients: int) -> HostSetup:
    client, server = recipes(scenario, n_clients)
    return HostSetup(seed=scenario.seed, batch_size=scenario.data.batch_size, client=client, server=server,
                     threads=scenario.train.threads_per_actor, keys=keys,
                     recompute=scenario.train.recompute_activations,
                     label_smoothing=scenario.train.label_smoothing, eval_threads=scenario.train.eval_threads)

