"""`hsplit run`: real training driven by the virtual clock, identical whatever executes it."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hsplit_actors.cli import main
from hsplit_actors.data import DATA_DIR
from hsplit_actors.runs import read_run
from hsplit_actors.scenario import parse_scenario
from hsplit_actors.summary import render, summarise
from hsplit_actors.training.run import run
from tests.conftest import REPO, run_scenario, tiny_training_scenario


def test_same_tables_with_one_or_two_client_actors_and_in_process(ray_session, tmp_path: Path) -> None:
    """(Two actors against in-process: the placement-independence law; one actor is the same law with a single
    host, kept out of make test for its time.)"""
    raw = tiny_training_scenario()
    _, two, extra_two = run_scenario(raw, tmp_path / "two", actors=2)
    _, local, extra_local = run_scenario(raw, tmp_path / "local", local=True)
    assert extra_two["client_actors"] == 2
    # the model the coordinator exports on Ray is, byte for byte, the one exported in-process
    assert extra_two["model"] == extra_local["model"] == "model/adapter"
    weights = "model/adapter/adapter_model.safetensors"
    assert (tmp_path / "two" / weights).read_bytes() == (tmp_path / "local" / weights).read_bytes()
    starts = extra_two["host_startup_s"]  # each actor's own start, and the coordinator's imports, are measured
    assert len(starts["client_hosts"]) == 2 and extra_two["startup"]["coordinator_import_s"] >= 0
    for host in [*starts["client_hosts"], starts["server"]]:
        assert set(host) == {"import_s", "wait_for_assets_s", "build_s"} and host["build_s"] > 0, host
    pd.testing.assert_frame_equal(two.events, local.events)
    pd.testing.assert_frame_equal(two.rounds.drop(columns="wall_s"), local.rounds.drop(columns="wall_s"))
    losses = two.rounds[["train_loss", "eval_loss", "eval_metric"]].to_numpy()
    assert np.isfinite(losses).all()
    assert (two.rounds["eval_metric"].between(0, 1)).all()  # accuracy


def _alive_actors(expect_none: bool = False) -> set[str]:
    """IDs of the actors alive in this session's Ray (GCS's table: the state API needs the dashboard); with
    `expect_none`, waited for a while to become empty (ray.kill is asynchronous)."""
    from ray._private.state import actors

    deadline = time.time() + 20
    while True:
        alive = {key for key, a in actors().items() if a["State"] == "ALIVE"}
        if not (expect_none and alive) or time.time() > deadline:
            return alive
        time.sleep(0.2)


def test_a_drivers_next_run_reuses_its_actors_and_gives_the_tables_of_new_ones(ray_session, tmp_path: Path) -> None:
    """In one Ray session (a notebook, the API, these tests) the next run rebuilds its hosts in the previous run's
    processes: nothing is imported again, a host is added where the run needs one more, and the tables are those
    of a run in new processes. (A run with a fault keeps nothing: the lost-actor test below.)"""
    raw = tiny_training_scenario()
    _, first, _ = run_scenario(raw, tmp_path / "first", actors=1)
    kept = _alive_actors()
    assert len(kept) == 3  # coordinator, server host, one client host
    _, again, extra = run_scenario(raw, tmp_path / "again", actors=2)
    assert extra["actors_reused"] and kept < _alive_actors() and len(_alive_actors() - kept) == 1
    starts = extra["host_startup_s"]
    assert starts["server"]["import_s"] == starts["client_hosts"][0]["import_s"] == 0.0  # the kept processes
    assert starts["client_hosts"][1]["import_s"] > 0.5  # the added one imported torch & co.
    assert extra["startup"]["coordinator_import_s"] < 0.1
    assert "of start-up: Ray 0.00 s, the previous run's actors, coordinator process" in render(
        summarise(again, extra), str(tmp_path / "again"))
    pd.testing.assert_frame_equal(first.events, again.events)
    pd.testing.assert_frame_equal(first.rounds.drop(columns="wall_s"), again.rounds.drop(columns="wall_s"))


def test_a_different_seed_trains_differently(ray_session, tmp_path: Path) -> None:
    _, a, _ = run_scenario(tiny_training_scenario(), tmp_path / "a", local=True)
    _, b, _ = run_scenario(tiny_training_scenario(seed=4), tmp_path / "b", local=True)
    assert not np.array_equal(a.rounds["train_loss"], b.rounds["train_loss"])


def test_federated_and_shared_server_variants_train(tmp_path: Path) -> None:
    """Each round's aggregate changes the global model: were no update applied, every evaluation would be the
    same (finite losses alone would not show it)."""
    for method in ({"name": "fedit", "rank": 4}, {"name": "splitlora", "rank": 4, "split_point": 2},
                   {"name": "sfl", "rank": 4, "split_point": 2, "variant": "v2"}):
        _, tables, _ = run_scenario(tiny_training_scenario(method=method, rounds=3), tmp_path / method["name"],
                                    local=True)
        assert np.isfinite(tables.rounds["train_loss"]).all(), method
        assert tables.rounds["eval_loss"].nunique() == 3, method


@pytest.mark.slow  # kept out of `make test` for its time (10-minute budget); `make test-slow` runs it
def test_run_learns_sst2_with_pretrained_minilm(ray_session, tmp_path: Path) -> None:
    """The real thing, small: pretrained MiniLM on SST-2 over 2 clients gets clearly above chance."""
    raw = tiny_training_scenario(
        model={"preset": "minilm-l6"}, rounds=3, local_iterations=15,
        fleet=[{"profile": "jetson_nano"}, {"profile": "agx_orin"}],
        data={"dataset": "sst2", "batch_size": 16, "seq_len": 40, "samples_per_client": 300},
        method={"name": "sfl", "split_point": 3, "rank": 8, "targets": ["query", "value"]},
        train={"eval_samples": 300, "lr": 0.003})
    _, tables, _ = run_scenario(raw, tmp_path / "minilm", actors=1)
    assert tables.rounds["eval_metric"].iloc[-1] > 0.65


def test_cli_run_writes_the_run_directory(ray_session, write_scenario, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    raw = tiny_training_scenario(rounds=1)
    assert main(["run", str(write_scenario(raw)), "--out", str(out), "--quiet", "--local"]) == 0
    printed = capsys.readouterr().out
    assert "model: train loss" in printed and "accuracy" in printed
    meta = json.loads((out / "meta.json").read_text())
    assert meta["mode"] == "run" and meta["metric"] == "accuracy"
    assert read_run(out).rounds["eval_metric"].notna().all()


def test_synthetic_data_cannot_be_trained(write_scenario, tmp_path: Path, capsys) -> None:
    raw = tiny_training_scenario(data={"dataset": "synthetic"})
    assert main(["run", str(write_scenario(raw)), "--out", str(tmp_path / "x"), "--quiet", "--local"]) == 2
    assert "hsplit run trains on real data" in capsys.readouterr().err


def test_bad_data_found_by_the_coordinator_is_one_line_and_leaves_no_directory(ray_session, write_scenario,
                                                                               tmp_path: Path, capsys) -> None:
    """The data is read inside the server actor (for the coordinator); its ScenarioError still reaches the user as
    one line."""
    small = tmp_path / "three.tsv"
    small.write_text("sentence\tlabel\ngood\t1\nbad\t0\nfine\t1\n")
    raw = tiny_training_scenario(data={"dataset": "sst2", "path": str(small), "batch_size": 2, "seq_len": 8,
                                       "samples_per_client": 1})
    out = tmp_path / "never"
    assert main(["run", str(write_scenario(raw)), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "data.samples_per_client: 3 samples cannot give each of 4 clients one" in err
    assert "Traceback" not in err and not out.exists()


CURRENT_CLUSTER = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # where `ray.init()` looks first
CLUSTER_SCRIPT = """
import json, sys, yaml
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1, num_gpus=int(sys.argv[3]))  # a GPU in name only: the server host goes there
cluster.wait_for_nodes()
import ray
from hsplit_actors.scenario import parse_scenario
from hsplit_actors.training.run import run
raw = json.loads(sys.argv[1])
try:
    directory, tables, extra = run(parse_scenario(yaml.safe_dump(raw)), sys.argv[2], address=cluster.address)
finally:  # a cluster left up leaves /tmp/ray/ray_current_cluster behind: a later ray.init() would wait on it
    ray.shutdown()
    cluster.shutdown()
print(json.dumps({"nodes": len(extra["client_nodes"]), "rounds": len(tables.rounds),
                  "coordinator": extra["coordinator_libraries"], "model": extra["model"]}))
"""


@pytest.mark.slow  # kept out of `make test` for its time (10-minute budget); `make test-slow` runs it
@pytest.mark.parametrize("gpus", [0, 1])
def test_two_node_cluster_places_clients_on_both_nodes(gpus: int, tmp_path: Path) -> None:
    """`ray.cluster_utils.Cluster` (two nodes on this machine): client actors spread, the run completes. With a
    GPU node, the server host runs there, so the coordinator makes the assets itself (they must outlive that
    node) and writes the model; without one, the server host beside it does both."""
    raw = tiny_training_scenario(rounds=1, train={"eval_samples": 32, "actors": 2})
    stale = CURRENT_CLUSTER.exists()
    proc = subprocess.run([sys.executable, "-c", CLUSTER_SCRIPT, json.dumps(raw), str(tmp_path / "c"), str(gpus)],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**__import__("os").environ, "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    libraries = ["torch", "transformers", "peft"] if gpus else ["torch"]
    assert result == {"nodes": 2, "rounds": 1, "coordinator": libraries, "model": "model/adapter"}
    assert (tmp_path / "c" / "model" / "adapter" / "adapter_model.safetensors").is_file()
    assert stale or not CURRENT_CLUSTER.exists()  # the test's cluster is gone, and no address of it is left


NODE_LOSS_SCRIPT = """
import json, sys, yaml
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
worker = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
import ray
from hsplit_actors.scenario import parse_scenario
from hsplit_actors.training.run import run
lost = []
def on_progress(p):  # the driver's poller: take the second node away early in round 1
    if p.round == 1 and not lost:
        lost.append(p.steps)
        cluster.remove_node(worker)
raw = json.loads(sys.argv[1])
try:
    directory, tables, extra = run(parse_scenario(yaml.safe_dump(raw)), sys.argv[2], address=cluster.address,
                                   on_progress=on_progress)
finally:
    ray.shutdown()
    cluster.shutdown()
print(json.dumps({"lost": bool(lost), "nodes": len(extra["client_nodes"]), "faults": tables.faults["what"].tolist(),
                  "losses": tables.rounds["train_loss"].tolist()}))
"""


@pytest.mark.slow
def test_losing_a_node_replaces_its_client_actor_and_the_run_ends_as_without_the_fault(tmp_path: Path) -> None:
    """Two nodes on this machine; the second is removed during round 1. Its client actor cannot come back there:
    the coordinator starts a replacement on the head node, restores it and replays the round."""
    raw = tiny_training_scenario(rounds=3, local_iterations=30, train={"eval_samples": 32, "lr": 0.01, "actors": 2})
    proc = subprocess.run([sys.executable, "-c", NODE_LOSS_SCRIPT, json.dumps(raw), str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=400, cwd=REPO,
                          env={**__import__("os").environ, "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["lost"] and result["nodes"] == 1  # every client actor ends on the node that is left
    assert len(result["faults"]) == 1 and "replaced on a live node" in result["faults"][0]
    _, clean, _ = run_scenario(raw, tmp_path / "clean", local=True)
    assert result["losses"] == clean.rounds["train_loss"].tolist()


@pytest.mark.slow
def test_make_run_default_scenario_reaches_good_accuracy(tmp_path: Path) -> None:
    code = main(["run", str(REPO / "scenarios" / "quickstart_train.yaml"), "--out", str(tmp_path / "q"), "--quiet"])
    assert code == 0
    assert read_run(tmp_path / "q").rounds["eval_metric"].iloc[-1] > 0.75


def interrupted_copy(full_dir: Path, cut: Path, rounds: int) -> Path:
    """An interrupted run: the scenario and the first `rounds` checkpoints of `full_dir`, no tables, no meta."""
    import shutil

    (cut / "checkpoints").mkdir(parents=True)
    shutil.copy(full_dir / "scenario.yaml", cut / "scenario.yaml")
    for r in range(rounds):
        shutil.copy(full_dir / "checkpoints" / f"round_{r:04d}.pt", cut / "checkpoints")
    return cut


def _same_tables(a, b) -> None:
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.rounds.drop(columns="wall_s"), b.rounds.drop(columns="wall_s"))
    pd.testing.assert_frame_equal(a.clients, b.clients)


@pytest.mark.slow  # for its time (10-minute budget); the export fault below restarts a client actor in place too
def test_a_killed_client_actor_is_restarted_and_the_run_ends_as_without_the_fault(ray_session, tmp_path) -> None:
    raw = tiny_training_scenario(rounds=3, train={"eval_samples": 32, "lr": 0.01, "actors": 2})
    _, clean, _ = run_scenario(raw, tmp_path / "clean")
    faulty = raw | {"train": raw["train"] | {"kill_actor": [{"round": 1, "after_steps": 3, "actor": 1}]}}
    directory, tables, extra = run_scenario(faulty, tmp_path / "faulty")
    assert extra["faults"] == 1
    assert not _alive_actors(expect_none=True)  # restarted in place, still none is kept for the next run
    assert tables.faults["round"].tolist() == [1]
    assert tables.faults["replayed_calls"].iloc[0] > 0
    _same_tables(clean, tables)
    assert len(read_run(directory).faults) == 1


@pytest.mark.parametrize(("kill", "replaced"), [
    ({"actor": 1, "restart": False}, "client actor 1"),
    pytest.param({"server": True, "restart": False}, "the server actor", marks=pytest.mark.slow),
    pytest.param({"server": True}, None, marks=pytest.mark.slow),  # restarted in place, as a client actor above
])
def test_a_lost_actor_is_restarted_or_replaced_and_the_run_ends_as_without_the_fault(ray_session, tmp_path, kill,
                                                                                    replaced) -> None:
    """`restart: false` is as when its node is lost: Ray will not bring it back, so the coordinator starts a new
    one, restores it and replays the round."""
    raw = tiny_training_scenario(rounds=2, train={"eval_samples": 32, "lr": 0.01, "actors": 2})
    _, clean, _ = run_scenario(raw, tmp_path / "clean", local=True)
    fault = {"round": 1, "after_steps": 3} | kill  # in the last round: everything after it must come out the same
    _, tables, extra = run_scenario(raw | {"train": raw["train"] | {"kill_actor": [fault]}}, tmp_path / "faulty")
    assert extra["faults"] == 1
    assert not _alive_actors(expect_none=True)  # a run that lost a host keeps none of its actors for the next
    assert tables.faults["actor"].iloc[0] == ("the server actor" if kill.get("server") else "client actor 1")
    what = tables.faults["what"].iloc[0]
    assert what.endswith(f"{replaced} replaced on a live node") if replaced else "replaced" not in what
    _same_tables(clean, tables)


def test_resume_from_a_checkpoint_ends_with_the_tables_of_an_uninterrupted_run(tmp_path: Path) -> None:
    raw = tiny_training_scenario(rounds=3, train={"eval_samples": 32, "lr": 0.01, "local": True})
    run_scenario(raw, tmp_path / "default")  # by default the newest two are kept
    assert sorted(p.name for p in (tmp_path / "default" / "checkpoints").iterdir()) == [
        "round_0001.pt", "round_0002.pt"]
    raw["train"]["keep_checkpoints"] = None
    full_dir, full, _ = run_scenario(raw, tmp_path / "full")
    assert sorted(p.name for p in (full_dir / "checkpoints").iterdir()) == [
        "round_0000.pt", "round_0001.pt", "round_0002.pt"]
    cut = interrupted_copy(full_dir, tmp_path / "cut", rounds=2)
    directory, resumed, extra = run(None, resume=cut)
    assert extra["resumed_from_round"] == 1 and directory == cut
    _same_tables(full, resumed)
    with pytest.raises(Exception, match="finished already"):
        run(None, resume=cut)


def test_cli_resume(tmp_path: Path, write_scenario, capsys) -> None:
    raw = tiny_training_scenario(rounds=2, train={"eval_samples": 32, "lr": 0.01, "local": True,
                                                  "keep_checkpoints": None})
    assert main(["run", str(write_scenario(raw)), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    cut = interrupted_copy(tmp_path / "a", tmp_path / "b", rounds=1)
    assert main(["run", "--resume", str(cut), "--quiet"]) == 0
    _same_tables(read_run(tmp_path / "a"), read_run(cut))
    assert main(["run", "--resume", str(tmp_path / "nowhere"), "--quiet"]) == 2


def test_recomputing_activations_changes_nothing_but_memory(tmp_path: Path) -> None:
    raw = tiny_training_scenario(rounds=2, train={"eval_samples": 32, "lr": 0.01, "local": True})
    _, kept, _ = run_scenario(raw, tmp_path / "kept")
    _, recomputed, _ = run_scenario(raw, tmp_path / "recomputed", recompute_activations=True)
    _same_tables(kept, recomputed)


@pytest.mark.slow  # 22 s; kept out of `make test` for its 10-minute budget (the line per round: test_newcomer.py)
def test_progress_shows_round_virtual_time_loss_and_accuracy_locally_and_on_ray(ray_session, tmp_path) -> None:
    from hsplit_actors.cli import _progress

    raw = tiny_training_scenario(rounds=2)
    for name, train in (("local", {"local": True}), ("ray", {"actors": 1})):
        seen = []
        _, tables, _ = run(parse_scenario(yaml.safe_dump(raw | {"train": raw["train"] | train})), tmp_path / name,
                           on_progress=seen.append)
        last = seen[-1]
        assert last.completed == 2 and last.t == tables.rounds["t_end"].iloc[-1] and last.metric == "accuracy"
        assert last.last["train_loss"] == tables.rounds["train_loss"].iloc[-1]
        assert last.last["eval_metric"] == tables.rounds["eval_metric"].iloc[-1]
        assert [p.completed for p in seen] == sorted(p.completed for p in seen)
    bar, update = _progress(parse_scenario(yaml.safe_dump(raw)), "training steps")
    update(last)
    task = bar.tasks[0]
    assert task.completed == task.total == 2
    assert task.description == (f"round 2/2  t={last.t:,.1f}s  loss {last.last['train_loss']:.3f}  "
                                f"accuracy {last.last['eval_metric']:.3f}")


@pytest.mark.parametrize("fault", [
    # the aggregation reads the trained adapters (slow-marked for the 10-minute budget: a lost actor restarted in
    # place stays fast in test_a_lost_actor_is_restarted_or_replaced_...)
    pytest.param({"at": "export", "actor": 1}, marks=pytest.mark.slow),
    pytest.param({"at": "evaluate", "server": True}, marks=pytest.mark.slow),  # the server evaluates the new model
    # the recovery point after it: lost for good, replaced
    pytest.param({"at": "capture", "actor": 0, "restart": False}, marks=pytest.mark.slow),
])
def test_a_host_lost_outside_the_client_steps_is_recovered_like_one_lost_during_them(ray_session, tmp_path,
                                                                                     fault) -> None:
    raw = tiny_training_scenario(rounds=3, train={"eval_samples": 32, "lr": 0.01, "actors": 2})
    _, clean, _ = run_scenario(raw, tmp_path / "clean", local=True)
    faulty = raw | {"train": raw["train"] | {"kill_actor": [{"round": 1} | fault]}}
    _, tables, extra = run_scenario(faulty, tmp_path / "faulty")
    # ray.kill is asynchronous: the loss shows at the first call that needs the dead (or restarted, empty) host,
    # in round 1 or later, never before
    assert extra["faults"] == 1 and tables.faults["round"].iloc[0] >= 1
    _same_tables(clean, tables)


def test_the_ray_state_recovery_reads_is_where_it_was(ray_session) -> None:
    """Fault detection reads an actor's state and node from Ray's private state API (the public one needs the
    dashboard): if a Ray upgrade moves or reshapes it, this fails here, not in the middle of a recovery."""
    import ray

    from hsplit_actors.training.ray_state import actor_info, live_nodes

    @ray.remote(num_cpus=0)
    class Probe:
        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    probe = Probe.remote()
    node = ray.get(probe.node.remote())
    assert live_nodes() == [node]
    assert actor_info(probe) == ("ALIVE", node)
    ray.kill(probe, no_restart=True)
    for _ in range(50):
        if actor_info(probe)[0] == "DEAD":
            break
        time.sleep(0.1)
    assert actor_info(probe)[0] == "DEAD"


@pytest.mark.parametrize(("method", "cpus", "clients", "expected"), [
    ({"name": "sfl", "split_point": 1, "rank": 4}, 2, 4, 1),  # a split method leaves one core to the server
    ({"name": "sfl", "split_point": 1, "rank": 4}, 16, 20, 15),
    ({"name": "fedit", "rank": 4}, 2, 4, 2),  # whole model on the clients: the server only evaluates
    ({"name": "hetlora", "ranks": [2, 4]}, 16, 20, 16),
    ({"name": "flora", "ranks": [2, 4]}, 16, 5, 5),  # at most one per client
    ({"name": "sfl", "split_point": 1, "rank": 4}, 1, 4, 1),
])
def test_client_actors_by_default_use_every_core(method, cpus, clients, expected, monkeypatch) -> None:
    from hsplit_actors.preparation import prepare
    from hsplit_actors.training.actors import client_actor_count

    raw = tiny_training_scenario(method=method, fleet=[{"profile": "agx_orin", "count": clients}])
    scenario = parse_scenario(yaml.safe_dump(raw))
    strategy = prepare(scenario).strategy
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    assert client_actor_count(scenario, clients, strategy) == expected
    assert client_actor_count(scenario, clients, strategy, cpus=cpus) == expected  # a cluster's CPUs
    explicit = parse_scenario(yaml.safe_dump(raw | {"train": raw["train"] | {"actors": 3}}))
    assert client_actor_count(explicit, clients, strategy) == min(3, clients)


@pytest.mark.parametrize(("method", "expected"), [({"name": "fedit", "rank": 4}, 2),
                                                  ({"name": "sfl", "split_point": 1, "rank": 4}, 1)])
def test_run_counts_client_actors_from_the_ray_clusters_cpus(method, expected, ray_session, tmp_path,
                                                              monkeypatch) -> None:
    """The session's Ray instance has 2 CPUs; this machine is made to claim 7: the cluster's count decides."""
    import hsplit_actors.training.run as run_module

    seen = []

    def stop(scenario, n_hosts, *rest):
        seen.append(n_hosts)
        raise LookupError("stopped before the actors start")

    monkeypatch.setattr("os.cpu_count", lambda: 7)
    monkeypatch.setattr(run_module, "_train_on_ray", stop)
    with pytest.raises(LookupError):
        run_scenario(tiny_training_scenario(method=method), tmp_path / "r")
    assert seen == [expected]


@pytest.mark.parametrize(("eval_threads", "cores", "expected"), [(None, 3, 3), (2, 3, 2)])
def test_the_server_evaluates_with_every_core_and_gives_its_threads_back(eval_threads, cores, expected,
                                                                         monkeypatch) -> None:
    """Every client step has finished when the server evaluates, so it takes every core (or train.eval_threads);
    its training steps keep train.threads_per_actor, and the metrics are those of one thread."""
    import warnings

    import torch

    from hsplit_actors.preparation import prepare
    from hsplit_actors.training import hosts as hosts_module
    from hsplit_actors.training.assets import local_hosts, prepare_assets

    raw = tiny_training_scenario()
    raw["train"] |= {"eval_threads": eval_threads}
    scenario = parse_scenario(yaml.safe_dump(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assets = prepare_assets(scenario, prepare(scenario))
    _, server = local_hosts(assets, 1, False)
    threads = torch.get_num_threads()
    single = hosts_module.evaluate(server.split(3), server.test, 64)
    seen = []
    real = hosts_module.evaluate
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    monkeypatch.setattr(hosts_module, "evaluate", lambda *a: seen.append(torch.get_num_threads()) or real(*a))
    metrics = server.evaluate(assets.factors, assets.head)
    assert seen == [expected]
    assert torch.get_num_threads() == threads == scenario.train.threads_per_actor
    assert metrics == single


def test_a_run_inside_a_ray_task_counts_the_cpus_it_was_given(ray_session) -> None:
    """A `compare` trial holds compare.cpus_per_run of the cluster: its run's default actors spread over those,
    not over every CPU of the cluster (the session's Ray has 2), and its server evaluates on them, not on every
    core of the machine; a run's own train.eval_threads is kept, and outside a task nothing is changed."""
    from hsplit_actors.training.run import cpus_for_this_run, within_given_cpus

    default = parse_scenario(yaml.safe_dump(tiny_training_scenario()))
    explicit = parse_scenario(yaml.safe_dump(tiny_training_scenario(train={"eval_threads": 5})))

    @ray_session.remote(num_cpus=1)
    def inside(scenarios) -> tuple:
        from hsplit_actors.training.run import cpus_for_this_run, within_given_cpus

        return cpus_for_this_run(), [within_given_cpus(s).train.eval_threads for s in scenarios]

    assert ray_session.get(inside.remote([default, explicit])) == (1, [1, 5])
    assert cpus_for_this_run() == 2  # the driver: the whole cluster
    assert within_given_cpus(default).train.eval_threads is None  # every core of the server's machine


def test_a_local_run_inside_a_ray_task_builds_its_hosts_for_the_cpus_it_was_given(ray_session, tmp_path) -> None:
    """`run` itself, in a one-CPU task with in-process hosts: one client host, the server evaluating on one
    thread; the scenario.yaml it leaves keeps the user's (null) setting."""
    raw = tiny_training_scenario(method={"name": "fedit", "rank": 4}, train={"local": True})
    raw["fleet"][0]["count"] = 4

    @ray_session.remote(num_cpus=1)
    def trial(text: str, out: str) -> list:
        import contextlib

        import hsplit_actors.training.run as run_module
        from hsplit_actors.scenario import parse_scenario

        seen = []

        def stop(scenario, setup, n_hosts, *rest):
            seen.append((scenario.train.eval_threads, n_hosts))
            raise LookupError("stopped before training")

        run_module._train_local = stop
        with contextlib.suppress(LookupError):
            run_module.run(parse_scenario(text), out)
        return seen

    assert ray_session.get(trial.remote(yaml.safe_dump(raw), str(tmp_path / "r"))) == [(1, 1)]
    assert yaml.safe_load((tmp_path / "r" / "scenario.yaml").read_text())["train"].get("eval_threads") is None


@pytest.mark.parametrize("preset, task, overrides", [
    ("minilm-l6", "classification", {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64,
                                     "num_attention_heads": 4, "num_labels": 2}),
    ("gpt2-small", "lm", {"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 300}),
    ("llama2-7b", "lm", {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64,
                         "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 300}),
])
def test_a_hosts_model_is_the_shared_weights_built_without_drawing_any(preset, task, overrides) -> None:
    """Every host builds the frozen model from the weights in the object store: it holds exactly those and the
    buffers the architecture makes (positions, rotary frequencies), and no weight is first drawn at random only to
    be replaced (that was most of a build; seen here as the random generator left untouched)."""
    import torch

    from hsplit_actors.costmodel.presets import build_config
    from hsplit_actors.model.families import family_of
    from hsplit_actors.model.loading import _model_class
    from hsplit_actors.training.hosts import ModelRecipe, build_model

    config = build_config(preset, overrides)
    reference = _model_class(task).from_config(config, dtype=torch.float32)
    family_of(reference).prepare(reference)  # as the hosts hold it (GPT-2: separate q, k, v)
    shared = {k: v.numpy().copy() for k, v in reference.state_dict().items()}
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    model = build_model(ModelRecipe(config, task), shared)
    assert torch.equal(torch.random.get_rng_state(), before)
    def tensors(m):  # tied weights under each of their names
        return dict(m.named_parameters(remove_duplicate=False)) | dict(m.named_buffers(remove_duplicate=False))

    built, expected = tensors(model), tensors(reference)
    assert built.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(built[name], tensor), name


def test_a_gpt2_skeleton_keeps_its_matrices_as_views_and_a_real_model_its_own_copies() -> None:
    """A host's skeleton, whose weights are replaced at once, lays GPT-2's Conv1D matrices out as Linear views
    (copying GPT-2 large's took 3.3 s of a host's build); a model that keeps its weights gets contiguous copies
    of the same values."""
    import torch

    from hsplit_actors.costmodel.presets import build_config
    from hsplit_actors.model.families import family_of
    from hsplit_actors.model.loading import _model_class

    config = build_config("gpt2-small", {"n_layer": 1, "n_embd": 32, "n_head": 4, "vocab_size": 300})
    for copy_weights in (False, True):
        model = _model_class("lm").from_config(config, dtype=torch.float32)
        block = model.transformer.h[0]
        fused, fc = block.attn.c_attn.weight.detach(), block.mlp.c_fc.weight.detach()
        family_of(model).prepare(model, copy_weights=copy_weights)
        laid_out = {"q": (block.attn.c_attn.q.weight, fused[:, :32].t()),
                    "v": (block.attn.c_attn.v.weight, fused[:, 64:].t()), "c_fc": (block.mlp.c_fc.weight, fc.t())}
        for name, (weight, expected) in laid_out.items():
            assert torch.equal(weight, expected), name
            shares = weight.untyped_storage().data_ptr() == expected.untyped_storage().data_ptr()
            assert shares != copy_weights, name
            assert weight.is_contiguous() == copy_weights, name


def test_a_hosts_gpt2_build_copies_no_matrix(monkeypatch) -> None:
    """The host's build (not only `prepare` when asked) leaves GPT-2's matrices as views before taking the shared
    weights: a copy there is thrown away at once."""
    import torch

    from hsplit_actors.costmodel.presets import build_config
    from hsplit_actors.model import families
    from hsplit_actors.model.loading import _model_class
    from hsplit_actors.training.hosts import ModelRecipe, build_model

    config = build_config("gpt2-small", {"n_layer": 1, "n_embd": 32, "n_head": 4, "vocab_size": 300})
    reference = _model_class("lm").from_config(config, dtype=torch.float32)
    families.family_of(reference).prepare(reference)
    shared = {k: v.numpy().copy() for k, v in reference.state_dict().items()}
    asked, laid_out = [], families._laid_out
    monkeypatch.setattr(families, "_laid_out", lambda view, copy: asked.append(copy) or laid_out(view, copy))
    build_model(ModelRecipe(config, "lm"), shared)
    assert asked and not any(asked)


HOST_PROCESS = """
import pickle, sys
import hsplit_actors.training.assets as assets  # what a host actor imports first
from hsplit_actors.training.actors import HOST_PARTS, made_assets
with open(sys.argv[1], "rb") as f:
    scenario, setup, samples = pickle.load(f)
made = made_assets(scenario, setup, samples)  # the server host's work, from the samples the coordinator chose
host = assets.client_host(dict(zip(HOST_PARTS, made[1:])))  # a client host's
print(sorted(m for m in ("pandas", "pyarrow", "hsplit_actors.simulation", "hsplit_actors.tables") if m in sys.modules))
"""


def test_the_hosts_processes_never_import_pandas_or_the_tables(tmp_path: Path) -> None:
    """Hosts import torch, transformers and peft side by side on start-up's critical path, and the server host
    then makes the assets; pandas and the tables (half a second to a second more in each) are the coordinator's,
    which reads the data and chooses the samples meanwhile."""
    import pickle

    from hsplit_actors.data.samples import choose_samples
    from hsplit_actors.preparation import prepare

    scenario = parse_scenario(yaml.safe_dump(tiny_training_scenario()))
    setup = prepare(scenario)
    (tmp_path / "given.pkl").write_bytes(pickle.dumps((scenario, setup, choose_samples(scenario, len(setup.fleet)))))
    done = subprocess.run([sys.executable, "-c", HOST_PROCESS, str(tmp_path / "given.pkl")], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**__import__("os").environ,
                                                                            "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "[]", done.stdout

def test_a_tied_weight_is_shipped_once_and_tied_again_on_the_host() -> None:
    """GPT-2's LM head is its input embedding: the shared weights hold it once (154 MB of GPT-2 small's 652 MB
    were shipped twice), and a host's model has one tensor under both names again, so that moving the model to
    the server's device moves it once."""
    import torch

    from hsplit_actors.costmodel.presets import build_config
    from hsplit_actors.model.families import family_of
    from hsplit_actors.model.loading import _model_class
    from hsplit_actors.training.hosts import ModelRecipe, build_model
    from hsplit_actors.training.setup import shareable_state

    config = build_config("gpt2-small", {"n_layer": 1, "n_embd": 32, "n_head": 4, "vocab_size": 300})
    reference = _model_class("lm").from_config(config, dtype=torch.float32)
    family_of(reference).prepare(reference)
    state, tied = shareable_state(reference)
    assert tied == {"lm_head.weight": "transformer.wte.weight"} and "lm_head.weight" not in state
    distinct = {t.untyped_storage().data_ptr(): t for t in reference.state_dict().values()}
    assert sum(a.nbytes for a in state.values()) == sum(t.numel() * t.element_size() for t in distinct.values())
    model = build_model(ModelRecipe(config, "lm", tied), state)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert torch.equal(model.lm_head.weight, reference.lm_head.weight)
    moved = model.to(torch.float64)  # what `.to(device)` does to each tensor: one tensor, converted once
    assert moved.lm_head.weight is moved.transformer.wte.weight
    assert len({p.data_ptr() for p in moved.parameters()}) == len(list(moved.parameters()))


def test_what_the_server_actor_finds_in_the_data_is_said_and_target_less_steps_leave_the_loss_finite(
        ray_session, write_scenario, tmp_path: Path, capsys) -> None:
    """The data is encoded inside the server actor, whose own warnings no user would see: a fleet asking for more
    samples than the file holds, and E2E prompts that fill seq_len, reach `hsplit run`'s stderr. Steps whose batch
    kept no text token have no loss (not NaN): the rounds' training loss stays a number."""
    from tests.conftest import SMALL_GPT2

    rows = (DATA_DIR / "e2e" / "devset.csv").read_text(encoding="utf-8").splitlines()
    small = tmp_path / "forty.csv"
    small.write_text("\n".join(rows[:41]) + "\n", encoding="utf-8")  # header and 40 samples, one line each
    raw = tiny_training_scenario(
        model=SMALL_GPT2 | {"weights": "random"}, method={"name": "sfl", "split_point": 1, "rank": 4},
        data={"dataset": "e2e", "path": str(small), "batch_size": 4, "seq_len": 19, "samples_per_client": 16})
    out = tmp_path / "run"
    assert main(["run", str(write_scenario(raw)), "--out", str(out), "--quiet"]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert any("4 clients x data.samples_per_client 16 exceed the 40 samples" in line for line in said), said
    assert any(line.startswith("warning: data.seq_len 19 ends ") for line in said), said
    rounds = read_run(out).rounds
    assert rounds["train_loss"].notna().all() and np.isfinite(rounds["train_loss"]).all(), rounds


def test_the_coordinators_run_imports_nothing_until_prepare_is_done(monkeypatch) -> None:
    """`prepare` and `run` reach the coordinator at once, in two threads; two threads importing the engine's
    modules at the same time can end in Python's _DeadlockError (seen in a start-up benchmark), so `run` waits
    for `prepare`, which imports what `run` needs, before it imports anything."""
    import builtins
    import threading

    from hsplit_actors.training.actors import Coordinator

    coordinator = Coordinator.__ray_metadata__.modified_class("test")  # the class itself, not a Ray actor
    runner, seen, real_import = [], [], builtins.__import__

    def recording(name, *args, **kwargs):
        if threading.get_ident() in runner and not coordinator.prepared.is_set():
            seen.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", recording)
    failed = []

    def call_run() -> None:
        runner.append(threading.get_ident())
        try:
            coordinator.run(None, [], None, None, None)
        except RuntimeError as exc:
            failed.append(str(exc))

    thread = threading.Thread(target=call_run)
    thread.start()
    time.sleep(0.5)  # `run` waits meanwhile: `prepare` has not finished
    coordinator.error = RuntimeError("prepare failed")
    coordinator.prepared.set()
    thread.join(timeout=30)
    assert failed == ["prepare failed"] and seen == [], seen
