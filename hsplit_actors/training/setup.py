"""Everything a training run needs before the clock starts: the model's frozen weights (to share), the encoded
data and its partition across the fleet, and the global initial adapters."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from hsplit_actors.costmodel import ModelArch
from hsplit_actors.data import TruncatedTextWarning
from hsplit_actors.data.datasets import IGNORE, Encoded, encode_e2e, encode_sst2
from hsplit_actors.data.samples import Samples, choose_samples
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


def training_data(scenario: Scenario, n_clients: int, samples: Samples | None = None) -> TrainingData:
    """The run's samples (`samples`, or chosen here) encoded for the model: only those the fleet uses, and the
    evaluation's."""
    from hsplit_actors.data.tokenizers import bert_tokenizer, gpt2_tokenizer

    samples = samples or choose_samples(scenario, n_clients)
    tok, encode = (bert_tokenizer(), encode_sst2) if samples.dataset == "sst2" else (gpt2_tokenizer(), encode_e2e)
    seq_len = scenario.data.seq_len
    train, test = encode(samples.train, tok, seq_len), encode(samples.evaluation, tok, seq_len)
    if samples.dataset == "e2e":
        check_texts(train, test, seq_len)
    return TrainingData(_arrays(train), _arrays(test), samples.partitions, samples.metric)


def check_texts(train: Encoded, test: Encoded, seq_len: int) -> None:
    """E2E samples whose prompt fills `seq_len` keep no token of their text: they train nothing (the loss over
    no token is NaN, its gradient zero) and are not scored. None left to train on is an error; some, a warning."""
    empty = [int(((d.labels != IGNORE).sum(dim=1) == 0).sum()) for d in (train, test)]
    if empty[0] == len(train):
        raise ScenarioError(f"{seq_len} leaves no token of the text in any of the {len(train)} "
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

