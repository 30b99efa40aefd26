"""The batching server in `run`: a batch is one forward/backward over the jobs' concatenated activations whose
gradients are the jobs' gradients summed (each client's activation gradient its own), then one optimiser step;
`max_jobs: 1` trains exactly as without batching."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from hsplit_actors.costmodel import ClientConfig
from hsplit_actors.preparation import prepare
from hsplit_actors.scenario import parse_scenario
from hsplit_actors.scenario.load import architecture
from hsplit_actors.timing import load_profile
from hsplit_actors.training import hosts as hosts_module
from hsplit_actors.training.assets import local_hosts, prepare_assets
from tests.conftest import run_scenario, tiny_training_scenario
from tests.timing_helpers import write_profile

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _scenario(split_point: int = 1, **changes) -> dict:
    raw = tiny_training_scenario(method={"name": "splitlora", "split_point": split_point, "rank": 4,
                                         "targets": ["query", "value"]}, **changes)
    raw["model"]["overrides"] |= NO_DROPOUT  # dropout draws differ between a batch and its jobs one by one
    return raw


def _server(raw: dict):
    scenario = parse_scenario(yaml.safe_dump(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setup = prepare(scenario)
        assets = prepare_assets(scenario, setup)
    _, server = local_hosts(assets, 1, True)
    server.load_shared(assets.factors, assets.head, True)
    return scenario, setup, server


@pytest.mark.parametrize("split_point", [1, 2])
def test_a_batch_gives_each_job_its_gradient_and_the_adapters_the_sum(split_point, monkeypatch) -> None:
    raw = _scenario(split_point)
    scenario, setup, server = _server(raw)
    b, s, h = scenario.data.batch_size, scenario.data.seq_len, setup.arch.hidden
    g = torch.Generator().manual_seed(0)
    payloads = [(torch.randn(b, s, h, generator=g), torch.ones(b, s, dtype=torch.long),
                 torch.randint(0, 2, (b,), generator=g)) for _ in range(3)]
    for c in range(3):
        server.register(c, split_point)
    captured: list[dict] = []

    def record(state) -> None:  # the gradient the step would apply; parameters kept, so every job sees the same
        captured.append({id(p): p.grad.clone() for group in state.optimizer.param_groups for p in group["params"]
                         if p.grad is not None})
        state.optimizer.zero_grad(set_to_none=True)

    monkeypatch.setattr(hosts_module.AdapterState, "step", record)
    alone = [server.step(c, 0, 0, payloads[c], True) for c in range(3)]
    scores_alone = server.importance([0, 1, 2])
    out = server.step_batch([(c, 0, 0) for c in range(3)], [True] * 3, *payloads)
    scores_batched = server.importance([0, 1, 2])
    grads, losses = out[:3], out[3:]
    assert len(captured) == 4, "three steps alone, one for the batch"
    for (grad, loss), batched_grad, batched_loss in zip(alone, grads, losses, strict=True):
        torch.testing.assert_close(batched_grad, grad, rtol=1e-4, atol=1e-6)
        assert batched_loss == pytest.approx(loss, rel=1e-5)
    summed = {k: sum(step[k] for step in captured[:3]) for k in captured[3]}
    assert captured[3].keys() == captured[0].keys()
    for k, grad in captured[3].items():
        torch.testing.assert_close(grad, summed[k], rtol=1e-4, atol=1e-6)
    # the importance probe scores each client on its own rows, as when its job ran alone
    assert scores_batched.keys() == scores_alone.keys() == {0, 1, 2}
    for c in range(3):
        for key, value in scores_alone[c].items():
            assert scores_batched[c][key] == pytest.approx(value, rel=1e-4)


FLEET = [{"profile": "jetson_nano", "count": 3}, {"profile": "agx_orin", "count": 3}]
SLOW = {"profile": "l4_24gb", "flops": 1e9}  # a slow server: jobs queue, so batches form


def test_max_jobs_one_trains_as_the_unbatched_server(tmp_path) -> None:
    raw = _scenario(server=SLOW, fleet=FLEET)
    _, plain, _ = run_scenario(raw, tmp_path / "plain", local=True)
    _, one, _ = run_scenario(raw | {"server": SLOW | {"batching": {"max_jobs": 1}}}, tmp_path / "one", local=True)
    pd.testing.assert_frame_equal(plain.events, one.events)
    pd.testing.assert_frame_equal(plain.rounds.drop(columns="wall_s"), one.rounds.drop(columns="wall_s"))


def test_a_batching_profiled_server_trains_and_records_its_batches(tmp_path) -> None:
    raw = _scenario(server=SLOW, fleet=FLEET) | {"rounds": 3}
    arch = architecture(parse_scenario(yaml.safe_dump(raw)))
    profile = write_profile(tmp_path / "server.yaml", arch, scale=100.0)  # slow enough for jobs to queue
    raw["server"] = SLOW | {"timing": str(profile), "batching": {"max_jobs": 3}}
    _, tables, _ = run_scenario(raw, tmp_path / "batched", local=True)
    events, rounds = tables.events, tables.rounds
    server_rows = events[events["phase"] == "server"]
    assert server_rows["batch"].max() > 1 and server_rows["batch"].max() <= 3
    # the virtual clock of `run` is the profile's: each batch takes the profile's time at its summed batch
    config = ClientConfig.uniform(arch, 1, 4, ["query", "value"])
    loaded = load_profile(profile)
    for jobs, rows in server_rows.groupby("batch"):
        expected = loaded.phases(arch, config, 8, 24, jobs=int(jobs))[2]
        np.testing.assert_allclose(rows["t_end"] - rows["t_start"], expected, rtol=1e-9)
    assert np.isfinite(rounds["train_loss"]).all()
    assert rounds["eval_loss"].nunique() == len(rounds), "each aggregate must move the global model"


@pytest.mark.slow  # 10-minute budget: Ray = in-process is tests/test_run.py's law, batching's is max_jobs_one below
def test_a_batched_run_on_ray_actors_equals_in_process(ray_session, tmp_path) -> None:
    raw = _scenario(server=SLOW | {"batching": {"max_jobs": 3}}, fleet=FLEET)
    _, local, _ = run_scenario(raw, tmp_path / "local", local=True)
    _, actors, _ = run_scenario(raw, tmp_path / "ray", actors=1)
    assert local.events.loc[local.events["phase"] == "server", "batch"].max() > 1
    pd.testing.assert_frame_equal(local.events, actors.events)
    pd.testing.assert_frame_equal(local.rounds.drop(columns="wall_s"), actors.rounds.drop(columns="wall_s"))
