"""The training recipe (SPEC §5): the schedule's shape, its position counted per owner across adapter restarts,
checkpoints, resume and faults; weight decay, clipping, label smoothing, a server-side rate; and the default
recipe leaving every method's tables exactly as they were before the recipe existed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hsplit_actors.errors import ScenarioError
from hsplit_actors.model.families import causal_loss
from hsplit_actors.model.lora import LoRAFactors
from hsplit_actors.scenario import parse_scenario
from hsplit_actors.training.hosts import AdapterState, load_state
from hsplit_actors.training.recipe import Recipe, recipes
from hsplit_actors.training.run import run
from hsplit_actors.training.slots import Adapter
from tests.conftest import run_scenario, small_scenario, tiny_training_scenario
from tests.fingerprints import CASES, assert_same_run, measure, recorded
from tests.test_run import _same_tables, interrupted_copy
from tests.test_split import small_model


# -- the schedule's shape ------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["constant", "linear", "cosine"]), warmup=st.integers(0, 50),
       extra=st.integers(1, 200))
def test_a_schedule_warms_up_linearly_then_holds_or_decays_to_zero_at_its_end(kind, warmup, extra) -> None:
    recipe = Recipe(1e-3, kind=kind, warmup_steps=warmup, total_steps=warmup + extra)
    factors = [recipe.factor(s) for s in range(warmup + extra + 5)]
    for s in range(warmup):  # rising by 1/warmup a step, full at the last warm-up step
        assert factors[s] == pytest.approx((s + 1) / warmup)
    assert all(0.0 <= f <= 1.0 for f in factors)
    after = factors[warmup:]
    if kind == "constant":
        assert all(f == 1.0 for f in after)
    else:
        assert after[0] == 1.0 and factors[warmup + extra] == pytest.approx(0.0, abs=1e-12)
        assert all(a >= b for a, b in zip(after, after[1:], strict=False))  # never rises again
        assert factors[-1] == pytest.approx(0.0, abs=1e-12)
    if kind == "cosine" and extra % 2 == 0:
        assert factors[warmup + extra // 2] == pytest.approx(0.5)


def _scenario(**train) -> object:
    raw = small_scenario(train=train)
    return parse_scenario(yaml.safe_dump(raw))


def test_a_decaying_schedule_ends_where_the_run_ends_for_clients_and_the_shared_server_set() -> None:
    scenario = _scenario(lr=1e-3, schedule={"kind": "linear", "warmup_steps": 2}, server_side_lr=5e-4)
    client, server = recipes(scenario, 6)
    assert client.total_steps == 2 * 3  # rounds x local iterations
    assert server.total_steps == 2 * 3 * 6  # one step per client iteration
    assert (client.lr, server.lr) == (1e-3, 5e-4)
    assert recipes(_scenario(schedule={"kind": "cosine", "total_steps": 40}), 6)[1].total_steps == 40


@pytest.mark.parametrize(("train", "extra", "words"), [
    ({"schedule": {"kind": "linear", "warmup_steps": 6}}, {}, "nothing is left to decay"),
    ({"schedule": {"kind": "cosine", "warmup_steps": 5, "total_steps": 5}}, {}, "no step to decay"),
    ({"schedule": {"kind": "linear"}}, {"aggregation": {"mode": "async", "concurrency": 2, "buffer": 1,
                                                         "until_s": 10.0}}, "give train.schedule.total_steps"),
    ({"schedule": {"kind": "step"}}, {}, "constant"),
    ({"weight_decay": -0.1}, {}, "greater than or equal to 0"),
    ({"label_smoothing": 1.0}, {}, "less than 1"),
    ({"max_grad_norm": 0}, {}, "greater than 0"),
])
def test_a_schedule_or_setting_that_cannot_run_is_refused_in_one_line(write_scenario, capsys, train, extra,
                                                                      words) -> None:
    from hsplit_actors.cli import main

    path = write_scenario(small_scenario(train=train, **extra))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and words in err and "train" in err


def test_plan_takes_a_scenario_with_a_recipe_and_times_it_as_without(write_scenario, tmp_path: Path) -> None:
    """The recipe changes what training computes, never the virtual clock."""
    import pandas as pd

    from hsplit_actors.cli import main

    plain = write_scenario(small_scenario(), "plain.yaml")
    recipe = write_scenario(small_scenario(train={"schedule": {"kind": "cosine", "warmup_steps": 2},
                                                  "max_grad_norm": 1.0, "label_smoothing": 0.1}), "recipe.yaml")
    for path, out in ((plain, "a"), (recipe, "b")):
        assert main(["plan", str(path), "--out", str(tmp_path / out), "--quiet"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "events.parquet"),
                                  pd.read_parquet(tmp_path / "b" / "events.parquet"))


# -- one trainable set ---------------------------------------------------------------------------------------
def _set(recipe: Recipe, steps: int = 0, seed: int = 0) -> AdapterState:
    torch.manual_seed(seed)
    adapter = Adapter(nn.Parameter(torch.randn(2, 5)), nn.Parameter(torch.randn(4, 2)), 4.0)
    return AdapterState({(0, "query"): adapter}, {}, recipe, steps)


def _grads(state: AdapterState, scale: float) -> None:
    for p in state.parameters():
        p.grad = torch.full_like(p, scale)


def test_each_step_takes_the_rate_of_the_owners_position_and_the_position_survives_a_restart() -> None:
    recipe = Recipe(1e-2, kind="linear", warmup_steps=3, total_steps=10)
    state = _set(recipe)
    for step in range(4):
        _grads(state, 1.0)
        state.step()
        assert state.optimizer.param_groups[0]["lr"] == recipe.rate(step)
    assert state.steps == 4
    factors = {(0, "query"): LoRAFactors(torch.zeros(2, 5), torch.zeros(4, 2), 4.0)}
    fresh = load_state(state, factors, None, recipe, keep_optimizer=False)  # NAA's restart: a new AdamW
    assert fresh is not state and not fresh.optimizer.state and fresh.steps == 4
    rebuilt = AdapterState.from_state_dict(state.state_dict(), recipe)  # a checkpoint or a restored host
    assert rebuilt.steps == 4


def test_clipping_bounds_the_global_norm_each_set_steps_with() -> None:
    """AdamW's first moment after one step is (1 - beta1) g: it shows the gradient the step used."""
    clipped, free = _set(Recipe(1e-3, max_grad_norm=0.5)), _set(Recipe(1e-3))
    for state in (clipped, free):
        _grads(state, 3.0)
        state.step()
    norm = lambda s: math.sqrt(sum(float(v["exp_avg"].pow(2).sum()) for v in s.optimizer.state.values())) / 0.1  # noqa: E731
    assert norm(clipped) == pytest.approx(0.5, rel=1e-5)
    assert norm(free) == pytest.approx(3.0 * math.sqrt(2 * 5 + 4 * 2), rel=1e-5)


def test_weight_decay_is_adamws() -> None:
    for decay in (0.0, 0.01, 0.1):
        assert _set(Recipe(1e-3, weight_decay=decay)).optimizer.param_groups[0]["weight_decay"] == decay


def test_label_smoothing_of_a_causal_lm_shifts_and_masks_as_transformers_does() -> None:
    model = small_model("gpt2")
    torch.manual_seed(0)
    logits = torch.randn(2, 7, model.config.vocab_size)
    labels = torch.randint(0, model.config.vocab_size, (2, 7))
    labels[0, 5:] = -100  # padding
    plain = model.loss_function(logits, labels, vocab_size=model.config.vocab_size)
    assert causal_loss(model, logits, labels, 0.0) == plain
    assert float(causal_loss(model, logits, labels, 1e-9)) == pytest.approx(float(plain), rel=1e-6)
    assert float(causal_loss(model, logits, labels, 0.1)) > float(plain)


# -- whole runs ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_the_default_recipe_gives_the_tables_recorded_before_it_existed(case: str, tmp_path: Path) -> None:
    """Constant schedule, AdamW's default decay, no clipping, no smoothing: the recorded tables, to the bit but for
    the losses and metric (to a relative 1e-5: their last bits depend on the CPU)."""
    assert_same_run(measure(case, tmp_path / case), recorded()[case])


RECIPE = {"schedule": {"kind": "linear", "warmup_steps": 2}, "max_grad_norm": 1.0, "label_smoothing": 0.1,
          "weight_decay": 0.05, "server_side_lr": 0.02}


def _recipe_run(rounds: int = 3, **train) -> dict:
    raw = tiny_training_scenario(**{k: v for k, v in CASES["hsplitlora"].items()}, rounds=rounds)
    raw["train"] = raw["train"] | {"eval_samples": 32, "keep_checkpoints": None} | RECIPE | train
    return raw


def test_each_recipe_setting_changes_training(tmp_path: Path) -> None:
    _, default, _ = run_scenario(tiny_training_scenario(**CASES["hsplitlora"], rounds=2), tmp_path / "d",
                                 eval_samples=32, local=True)
    for name, value in RECIPE.items():
        raw = tiny_training_scenario(**CASES["hsplitlora"], rounds=2)
        _, changed, _ = run_scenario(raw, tmp_path / name, eval_samples=32, local=True, **{name: value})
        assert not changed.rounds["train_loss"].equals(default.rounds["train_loss"]), name


def test_a_schedule_resumed_mid_run_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    full_dir, full, _ = run_scenario(_recipe_run(), tmp_path / "full", local=True)
    _, resumed, _ = run(None, resume=interrupted_copy(full_dir, tmp_path / "cut", rounds=2))
    _same_tables(full, resumed)


@pytest.mark.slow  # 10-minute budget (Ray actors, ~40 s): the fast resume law above restores the same state
def test_a_schedule_survives_a_killed_host(ray_session, tmp_path: Path) -> None:
    raw = _recipe_run(actors=2)
    _, clean, _ = run_scenario(raw, tmp_path / "clean", local=True)
    fault = {"round": 1, "after_steps": 3, "actor": 1, "restart": False}
    _, faulty, extra = run_scenario(raw | {"train": raw["train"] | {"kill_actor": [fault]}}, tmp_path / "faulty")
    assert extra["faults"] == 1
    _same_tables(clean, faulty)


def test_recipes_refuse_what_the_schema_would(tmp_path: Path) -> None:
    scenario = _scenario(schedule={"kind": "linear", "total_steps": 3})
    bad = scenario.model_copy(update={"train": scenario.train.model_copy(update={
        "schedule": scenario.train.schedule.model_copy(update={"total_steps": None, "warmup_steps": 99})})})
    with pytest.raises(ScenarioError, match="nothing is left to decay"):
        recipes(bad, 6)
