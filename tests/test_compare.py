"""`hsplit compare`: variants x seeds, a target that must hold, tuning on a validation split, runs side by side on
Ray (and on two nodes), resume, the timing-only comparison, and bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsplit_actors.cli import main
from hsplit_actors.comparison.stats import area_under, held_from, mean_ci, student_t_quantile
from hsplit_actors.comparison.variants import resolve, select
from hsplit_actors.runs import read_run
from hsplit_actors.scenario import Scenario
from tests.conftest import REPO, small_scenario, tiny_training_scenario


# -- figures --------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(0, 1), min_size=1, max_size=12), target=st.floats(0, 1), hold=st.integers(1, 4))
def test_the_target_must_hold(values, target, hold) -> None:
    """The first evaluation from which `hold` in a row meet the target; none before it does."""
    x = np.array(values)
    i = held_from(x, target, True, hold)
    runs = [j for j in range(len(x) - hold + 1) if (x[j:j + hold] >= target).all()]
    assert i == (runs[0] if runs else None)
    low = held_from(-x, -target, False, hold)  # perplexity-like: lower is better, the same law mirrored
    assert low == i


def test_a_single_touch_is_not_a_held_target() -> None:
    """SplitLoRA's case in RESULTS.md: 80% touched once, then lower; the first touch is reported on its own."""
    values = np.array([0.7, 0.8, 0.68, 0.79, 0.81, 0.82])
    assert held_from(values, 0.8, True, 2) == 4 and held_from(values, 0.8, True, 1) == 1


def test_area_under_is_the_time_average_of_the_held_metric() -> None:
    times, values = np.array([1.0, 2.0, 4.0]), np.array([0.5, 0.6, 0.9])
    # [0, 2): 0.5 (the first value counts before the first evaluation), [2, 4): 0.6, [4, 5]: 0.9
    assert area_under(times, values, 5.0) == pytest.approx((0.5 * 2 + 0.6 * 2 + 0.9 * 1) / 5)
    assert area_under(times, values, 1.5) == pytest.approx(0.5)


def test_mean_ci_is_students_t() -> None:
    x = pd.Series([0.80, 0.82, 0.78])
    mean, half, n = mean_ci(x)
    assert n == 3 and mean == pytest.approx(0.8)
    assert half == pytest.approx(4.302652729749462 * 0.02 / math.sqrt(3))
    assert mean_ci(pd.Series([0.5, np.nan]))[1:] == (pytest.approx(np.nan, nan_ok=True), 1)


@pytest.mark.parametrize("p, df, quantile", [  # scipy 1.17's stats.t.ppf, when this package still used it
    (0.975, 1, 12.706204736174694), (0.975, 2, 4.302652729749462), (0.975, 4, 2.7764451051977934),
    (0.975, 9, 2.262157162798205), (0.975, 29, 2.045229642132703), (0.95, 4, 2.1318467863266495),
    (0.995, 3, 5.840909309733355), (0.6, 7, 0.2631668613520229), (0.975, 1000, 1.9623390808264083)])
def test_students_t_quantiles_are_the_tabled_ones(p, df, quantile) -> None:
    assert student_t_quantile(p, df) == pytest.approx(quantile, rel=1e-9)
    assert student_t_quantile(1 - p, df) == pytest.approx(-quantile, rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(p=st.floats(1e-9, 1 - 1e-9))
def test_students_t_quantile_has_the_closed_forms_of_one_and_two_degrees_of_freedom(p) -> None:
    """df = 1 is Cauchy's tan(pi (p - 1/2)); df = 2 is (2p - 1) / sqrt(2 p (1 - p))."""
    assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-7, abs=1e-12)
    assert student_t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-7,
                                                     abs=1e-12)


def test_students_t_quantile_refuses_what_has_none() -> None:
    for p, df in ((0.0, 3), (1.0, 3), (0.5, 0), (float("nan"), 3)):
        with pytest.raises(ValueError, match="p must lie in"):
            student_t_quantile(p, df)


# -- variants and bad input -----------------------------------------------------------------------------------
def scenario_with(compare: dict, **changes) -> Scenario:
    raw = small_scenario(**changes)
    raw["compare"] = compare
    return Scenario.model_validate(raw)


def test_a_variant_is_a_method_with_overrides() -> None:
    scenario = scenario_with({"variants": {
        "fast": {"method": "hsplitlora", "lr": 0.001, "split_objective": "budget", "rounds": 5,
                 "aggregation": {"mode": "async", "concurrency": 4, "buffer": 2, "aggregations": 6}},
        "base": {"method": "splitlora", "rank": 2}}})
    variants = select(scenario, None)
    fast = resolve(scenario, "fast", variants["fast"])
    assert fast.method.name == "hsplitlora" and fast.method.lr == 0.001 and fast.method.split_objective == "budget"
    assert fast.rounds == 5 and fast.aggregation.mode == "async" and fast.aggregation.buffer == 2
    base = resolve(scenario, "base", variants["base"])
    assert base.method.rank == 2 and base.rounds == scenario.rounds and base.aggregation.mode == "sync"
    # a variant's train (recipe) and data sections merge into the scenario's, key by key
    recipe = scenario_with({"variants": {"warm": {"method": "sfl", "train": {"schedule": {"kind": "linear",
                                                                                          "warmup_steps": 2}},
                                                  "data": {"partition": {"kind": "iid"}}}}},
                           train={"lr": 0.004, "eval_samples": 99})
    warm = resolve(recipe, "warm", select(recipe, None)["warm"])
    assert warm.train.schedule.kind == "linear" and warm.train.lr == 0.004 and warm.train.eval_samples == 99
    assert warm.data.partition.kind == "iid" and warm.data.batch_size == recipe.data.batch_size
    # without variants: one per method, with per_method's settings; the scenario's own method keeps its settings
    old = scenario_with({"methods": ["sfl", "fedit"], "per_method": {"fedit": {"rank": 8}}})
    assert resolve(old, "sfl", select(old, None)["sfl"]).method.split_point == 2
    assert resolve(old, "fedit", select(old, None)["fedit"]).method.rank == 8


@pytest.mark.parametrize("compare, message", [
    ({"variants": {"a": {"method": "sfl", "speed": 3}}}, "compare.variants.a.speed: unknown key 'speed'"),
    ({"variants": {"a": {"rank": 3}}}, "variant 'a' names no method"),
    ({"variants": {"a": {"method": "fedavg"}}}, "unknown method 'fedavg'"),
    ({"variants": {"a": {"method": "sfl", "rank": -1}}}, "compare.variants.a: method.rank: input should be greater"),
    ({"variants": {"a": {"method": "sfl", "aggregation": {"mode": "async", "buffer": 2}}}},
     "mode async needs `concurrency`"),
    ({"variants": {"a": {"method": "sfl", "aggregation": {"mode": "async", "concurrency": 99, "buffer": 2,
                                                          "aggregations": 3}}}}, "exceeds the 6 clients"),
    ({"variants": {"a": {"method": "sfl", "rounds": 0}}}, "rounds"),
    ({"variants": {}}, "compare.variants is empty"),
    ({"variants": {"a": {"method": "sfl", "train": {"schedule": {"kind": "linear", "warmup_steps": 50}}}}},
     "nothing is left to decay"),
    ({"variants": {"a": {"method": "sfl", "data": {"partition": {"kind": "zipf"}}}}}, "compare.variants.a"),
    ({"seeds": []}, "compare.seeds"),
    ({"seeds": [1, 1]}, "repeat a seed"),
    ({"seeds": [-1]}, "compare.seeds"),
    ({"methods": ["sfl"], "tune": {"prune_gamma": [0.9, 0.99]}}, "has no setting 'prune_gamma' to tune"),
    ({"variants": {"a": {"method": "sfl", "lr": 0.1}}, "tune": {"lr": [0.1, 0.01]}}, "fixes lr and tunes it"),
    ({"methods": ["sfl"], "tune": {"lr": []}}, "compare.tune"),
    ({"methods": ["sfl"], "hold": 0}, "compare.hold"),
])
def test_bad_comparisons_are_refused_with_one_line(compare, message, write_scenario, tmp_path: Path,
                                                   capsys) -> None:
    raw = small_scenario()
    raw["compare"] = compare
    out = tmp_path / "out"
    assert main(["compare", str(write_scenario(raw)), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("setting, message", [
    ({"compare": {"methods": ["sfl"], "tune": {"lr": [0.1, 0.01]}}}, "tuning needs training"),
    ({"compare": {"variants": {"a": {"method": "sfl", "tune": {"lr": [0.1]}}}}}, "tuning needs training"),
    ({"train": {"kill_actor": [{"round": 0}]}}, "fault injection needs training"),
])
def test_plan_refuses_training_only_settings(setting, message, write_scenario, tmp_path: Path, capsys) -> None:
    raw = small_scenario(**setting)
    assert main(["compare", str(write_scenario(raw)), "--plan", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_unknown_variant_on_the_command_line(write_scenario, tmp_path: Path, capsys) -> None:
    raw = small_scenario(compare={"variants": {"a": {"method": "sfl"}}})
    assert main(["compare", str(write_scenario(raw)), "--methods", "b", "--out", str(tmp_path / "o")]) == 2
    assert "unknown variant 'b'; choose from a" in capsys.readouterr().err
    assert main(["compare", str(write_scenario(raw)), "--seeds", "", "--out", str(tmp_path / "o")]) == 2
    assert "--seeds names no seed" in capsys.readouterr().err


# -- runs on Ray ----------------------------------------------------------------------------------------------
MIXED_FLEET = [{"profile": "jetson_nano", "count": 2}, {"profile": "agx_orin", "count": 2}]


@pytest.mark.slow  # 10-minute budget; compare --plan stays in make test (test_compare_says_what_plan_warns_...)
def test_plan_comparison_reports_timing_and_split_points(ray_session, write_scenario, tmp_path: Path) -> None:
    """No weights: per variant round time, phases, traffic, memory, parameters and the split points chosen,
    as mean ± CI over seeds (fleet sampling changes with the seed)."""
    raw = small_scenario(method={"name": "hsplitlora"}, compare={"seeds": [0, 1], "variants": {
        "latency": {"method": "hsplitlora"}, "budget": {"method": "hsplitlora", "split_objective": "budget"},
        "sfl": {"method": "sfl", "split_point": 1}}})
    out = tmp_path / "plan"
    assert main(["compare", str(write_scenario(raw)), "--plan", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "comparison.csv").set_index("variant")
    per_seed = pd.read_csv(out / "per_seed.csv")
    assert len(per_seed) == 6 and set(per_seed["seed"]) == {0, 1}
    for variant, group in per_seed.groupby("variant"):
        assert table.loc[variant, "round_s_mean"] == pytest.approx(group["round_s_mean"].mean())
        run = read_run(group["run_dir"].iloc[0])
        assert json.loads((Path(group["run_dir"].iloc[0]) / "meta.json").read_text())["mode"] == "plan"
        feasible = run.clients[run.clients["feasible"]]
        counts = feasible["split_point"].value_counts()
        assert group["split_points"].iloc[0] == " ".join(f"{k}:{counts[k]}" for k in sorted(counts.index))
    assert table.loc["sfl", "split_points"] == "1:12"
    deepest = [max(int(p.split(":")[0]) for p in s.split()) for s in (table.loc["budget", "split_points"],
                                                                       table.loc["latency", "split_points"])]
    assert deepest[0] >= deepest[1]
    splits = pd.read_csv(out / "split_points.csv", index_col=0)
    assert np.allclose(splits.sum(axis=1), 1.0)
    header = (out / "comparison.md").read_text().splitlines()[0].strip("| ").split(" | ")
    assert set(header) <= set(table.reset_index().columns), set(header) - set(table.reset_index().columns)
    assert (out / "comparison.png").stat().st_size > 1000


def tiny_compare(variants: tuple[str, ...] = ("sfl", "splitlora"), **compare) -> dict:
    raw = tiny_training_scenario(fleet=MIXED_FLEET, rounds=2, train={"eval_samples": 32, "lr": 0.01, "local": True})
    every = {"sfl": {"method": "sfl", "split_point": 1}, "splitlora": {"method": "splitlora", "rank": 2,
                                                                       "split_point": 1}}
    raw["compare"] = {"variants": {v: every[v] for v in variants}, "seeds": [0, 1]} | compare
    return raw


def test_variants_times_seeds_equal_their_sequential_runs(ray_session, write_scenario, tmp_path: Path) -> None:
    """Each row is exactly the run `hsplit run` gives for that variant and seed; the table is their mean and CI."""
    from hsplit_actors.training.run import run

    raw = tiny_compare()
    raw["train"]["tensorboard"] = True
    out = tmp_path / "cmp"
    assert main(["compare", str(write_scenario(raw)), "--out", str(out), "--quiet"]) == 0
    per_seed = pd.read_csv(out / "per_seed.csv")
    # `tensorboard --logdir out` shows every variant and seed: one event folder per run
    assert sorted(str(p.parent.relative_to(out)) for p in out.glob("*/seed*/tensorboard")) == [
        "sfl/seed0", "sfl/seed1", "splitlora/seed0", "splitlora/seed1"]
    table = pd.read_csv(out / "comparison.csv").set_index("variant")
    assert sorted(zip(per_seed["variant"], per_seed["seed"], strict=True)) == [
        ("sfl", 0), ("sfl", 1), ("splitlora", 0), ("splitlora", 1)]
    # Tune reuses a trial's process for the next trial: these in-process runs import torch & co. once (and a run
    # on actors keeps its actors, tests/test_run_methods.py); the rows are still exactly the runs alone, below
    imports = [json.loads((Path(d) / "meta.json").read_text())["startup"]["coordinator_import_s"]
               for d in per_seed["run_dir"]]
    assert max(imports) > 0.5 and sum(s < 0.1 for s in imports) >= 1, imports
    scenario = Scenario.model_validate(raw)
    for row in per_seed[(per_seed["seed"] == 1) & (per_seed["variant"] == "splitlora")].itertuples():  # rerun alone
        alone = resolve(scenario, row.variant, raw["compare"]["variants"][row.variant])
        _, tables, _ = run(alone.model_copy(update={"seed": row.seed}), tmp_path / f"alone-{row.variant}-{row.seed}")
        assert tables.rounds["eval_metric"].tolist() == read_run(row.run_dir).rounds["eval_metric"].tolist()
        assert row.final_metric == tables.rounds["eval_metric"].iloc[-1]
    for variant, group in per_seed.groupby("variant"):
        mean, half, _ = mean_ci(group["final_metric"])
        assert table.loc[variant, "final_metric"] == pytest.approx(mean)
        assert table.loc[variant, "final_metric_ci"] == pytest.approx(half, nan_ok=True)
    target = table["target"].iloc[0]
    assert target == per_seed["best_metric"].min()  # default: the best metric every run reached
    assert "± " in (out / "comparison.md").read_text()


@pytest.mark.slow  # 10-minute budget; the guard's rule stays in make test (test_tuning_cannot_crown_chance_or_a_tie)
def test_tuning_chooses_on_validation_and_reports_the_evaluation_set(ray_session, write_scenario,
                                                                       tmp_path: Path) -> None:
    # a tiny random model learns nothing in 6 steps: the guard would refuse it (tested below), so it is off here
    raw = tiny_compare(("sfl",), tune={"lr": [0.03, 0.001]}, tune_seeds=[1], validation_samples=40,
                       tune_guard=False)
    out = tmp_path / "tuned"
    assert main(["compare", str(write_scenario(raw)), "--out", str(out), "--quiet"]) == 0
    assert "lr=" in (out / "comparison.md").read_text()  # the row says at what value it was tuned
    tuning = pd.read_csv(out / "tuning.csv")
    assert len(tuning) == 2 and set(tuning["seed"]) == {1}  # points x tuning seeds
    assert len(pd.read_csv(out / "per_seed.csv")) == 2  # the chosen point under every seed
    per_seed = pd.read_csv(out / "per_seed.csv")
    for variant, group in tuning.groupby("variant"):
        means = group.groupby("point", sort=False)["validation_final"].mean()
        chosen = set(group.loc[group["chosen"], "point"])
        assert len(chosen) == 1 and means[chosen.pop()] == means.max()  # ties: the first in the grid
        tuned = json.loads(per_seed.loc[per_seed["variant"] == variant, "tuned"].iloc[0])
        assert group.loc[group["chosen"], "point"].iloc[0] == f"lr={tuned['lr']}"
    for run_dir in tuning["run_dir"]:  # tuning runs: evaluated on the held-out split of the training file
        saved = Scenario.model_validate(__import__("yaml").safe_load((out / run_dir / "scenario.yaml").read_text()))
        assert saved.train.evaluate_on == "validation" and saved.data.validation_samples == 40
    for run_dir in per_seed["run_dir"]:  # final runs: the evaluation set, the same clients' data
        saved = Scenario.model_validate(__import__("yaml").safe_load((Path(run_dir) / "scenario.yaml").read_text()))
        assert saved.train.evaluate_on == "test" and saved.data.validation_samples == 40


@pytest.mark.parametrize(("means", "refused"), [
    ({"lr=0.001": 0.55, "lr=0.003": 0.58}, "within noise of predicting the majority class"),  # bound 0.55+0.05
    ({"lr=0.001": 0.80, "lr=0.003": 0.81, "lr=0.01": 0.805}, "cannot tell the points"),  # se 0.025
    ({"lr=0.001": 0.75, "lr=0.003": 0.81}, None),
    ({"lr=0.001": 0.81}, None),  # one point: nothing to tie with
])
def test_tuning_cannot_crown_chance_or_a_tie(means, refused) -> None:
    from hsplit_actors.comparison import refuse_untuned
    from hsplit_actors.errors import ScenarioError

    meta = {"eval_majority_rate": 0.55, "eval_size": 396}  # standard error sqrt(.55 .45 / 396) = 0.025
    if refused is None:
        refuse_untuned("v", pd.Series(means), meta, "final")
        return
    with pytest.raises(ScenarioError, match=refused) as caught:
        refuse_untuned("v", pd.Series(means), meta, "final")
    assert "'v'" in str(caught.value) and "\n" not in str(caught.value)
    refuse_untuned("v", pd.Series(means), {"eval_size": 396}, "final")  # perplexity: no majority class


@pytest.mark.slow  # 10-minute budget: the rule itself is test_tuning_cannot_crown_chance_or_a_tie, above
def test_a_variant_tuned_at_chance_is_refused_before_its_final_runs(ray_session, write_scenario, tmp_path: Path,
                                                                   capsys) -> None:
    raw = tiny_compare(("sfl",), tune={"lr": [1e-7, 2e-7]}, tune_seeds=[1], validation_samples=40)
    out = tmp_path / "chance"
    assert main(["compare", str(write_scenario(raw)), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "variant 'sfl'" in error[0] and "Traceback" not in err
    assert (out / "tuning.csv").is_file() and not (out / "sfl").exists()  # tuning kept, no final run


@pytest.mark.slow  # kept out of `make test` for its time (10-minute budget); `make test-slow` runs it
def test_a_finished_comparison_grows_by_a_seed(ray_session, write_scenario, tmp_path: Path) -> None:
    """`--resume DIR --seeds 0,1`: the runs it had are kept as they are, the new seed's runs are added."""
    out = tmp_path / "cmp"
    assert main(["compare", str(write_scenario(tiny_compare(("sfl",), seeds=[0]))), "--out", str(out),
                 "--quiet"]) == 0
    first = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/meta.json")}
    assert len(first) == 1
    assert main(["compare", "--resume", str(out), "--seeds", "0,1", "--quiet"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())
    per_seed = pd.read_csv(out / "per_seed.csv")
    assert sorted(per_seed["seed"]) == [0, 1] and per_seed["final_metric"].notna().all()


@pytest.mark.slow
def test_an_interrupted_comparison_resumes(ray_session, write_scenario, tmp_path: Path) -> None:
    """Killed after its first runs finished: --resume keeps them, runs the rest, and gives the same table
    (1.5 minutes)."""
    path = write_scenario(tiny_compare(("sfl",)))
    out = tmp_path / "cmp"
    env = {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "PATH": __import__("os").environ["PATH"]}
    proc = subprocess.Popen([sys.executable, "-m", "hsplit_actors.cli", "compare", str(path), "--out", str(out),
                             "--quiet"], stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True)
    for line in proc.stderr:
        if line.startswith("done:"):
            break
    __import__("os").killpg(proc.pid, 9)
    proc.wait()
    first = sorted(out.glob("*/seed*/meta.json"))
    assert len(first) == 1 and not (out / "comparison.csv").exists()
    stamps = {p: p.stat().st_mtime_ns for p in first}
    assert main(["compare", "--resume", str(out), "--quiet"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished runs were not run again
    again = tmp_path / "again"
    assert main(["compare", str(path), "--out", str(again), "--quiet"]) == 0
    resumed, fresh = pd.read_csv(out / "per_seed.csv"), pd.read_csv(again / "per_seed.csv")
    for column in ("final_metric", "best_metric", "time_to_target_s", "auc_metric", "bytes_moved"):
        assert resumed[column].tolist() == pytest.approx(fresh[column].tolist(), nan_ok=True), column
    done = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/meta.json")}
    assert main(["compare", "--resume", str(out), "--seeds", "0,1,2", "--quiet"]) == 0  # one more seed
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())
    assert sorted(pd.read_csv(out / "per_seed.csv")["seed"]) == [0, 1, 2]


TWO_NODES = textwrap.dedent("""
    import json, sys
    import ray
    from ray.cluster_utils import Cluster
    from hsplit_actors.cli import main
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    code = main(["compare", sys.argv[1], "--out", sys.argv[2], "--quiet"])
    print(json.dumps({"code": code, "nodes": len({n["NodeID"] for n in ray.nodes() if n["Alive"]})}))
    ray.shutdown()
    cluster.shutdown()
""")


@pytest.mark.slow
def test_a_sweep_uses_both_nodes_of_a_cluster_and_gives_the_sequential_results(write_scenario,
                                                                                 tmp_path: Path) -> None:
    """Two nodes of one CPU each, a run per CPU: runs land on both nodes and equal `hsplit run`'s (2 minutes)."""
    raw = tiny_compare(cpus_per_run=1)
    path = write_scenario(raw)
    script = tmp_path / "two_nodes.py"
    script.write_text(TWO_NODES)
    out = tmp_path / "cluster"
    done = subprocess.run([sys.executable, str(script), str(path), str(out)], capture_output=True, text=True,
                          cwd=REPO, timeout=600, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "nodes": 2}, done.stderr[-2000:]
    placement = json.loads((out / "placement.json").read_text())
    assert len(placement) == 4 and len(set(placement.values())) == 2
    from hsplit_actors.training.run import run

    scenario = Scenario.model_validate(raw)
    for row in pd.read_csv(out / "per_seed.csv").itertuples():
        alone = resolve(scenario, row.variant, raw["compare"]["variants"][row.variant])
        _, tables, _ = run(alone.model_copy(update={"seed": row.seed}), tmp_path / f"seq-{row.variant}-{row.seed}")
        assert tables.rounds["eval_metric"].tolist() == read_run(row.run_dir).rounds["eval_metric"].tolist()


def test_compare_says_what_plan_warns_about_each_variant(ray_session, write_scenario, tmp_path: Path,
                                                         capsys) -> None:
    """Devices that cannot hold a variant's configuration are said once per variant, as `plan` says them, not
    hidden inside the runs."""
    raw = small_scenario(fleet=[{"profile": "jetson_nano", "count": 2, "memory_gb": 0.001},
                                {"profile": "agx_orin", "count": 3}],
                         compare={"seeds": [0], "variants": {"sfl": {"method": "sfl", "split_point": 1}}})
    assert main(["compare", str(write_scenario(raw)), "--plan", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("warning: sfl: 2 of 5 clients (jetson_nano x2) cannot hold"), lines


def test_tuning_runs_keep_no_model_and_final_runs_do() -> None:
    """A tuning run's model is thrown away: it exports none; a comparison's final runs keep theirs."""
    from hsplit_actors.comparison import plan_jobs
    from hsplit_actors.comparison.variants import select

    scenario = Scenario.model_validate(tiny_compare(("sfl",), tune={"lr": [0.03, 0.001]}, tune_seeds=[1],
                                                    validation_samples=40))
    _, tune_jobs, _ = plan_jobs(scenario, select(scenario, None), plan_only=False)
    assert len(tune_jobs) == 2 and not any(job.scenario.train.export for job in tune_jobs)
    assert all(job.scenario.train.evaluate_on == "validation" for job in tune_jobs)
    assert scenario.train.export  # what the final runs are made from
