"""Clients that move between hosts to even out a round: each host gets an even share of the round's steps, and
what every client computes is what it computes where it stays (tables bit for bit), through faults and resumes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsplit_actors.training.placement import Placement
from hsplit_actors.training.run import run
from tests.conftest import run_scenario, tiny_training_scenario
from tests.fingerprints import fingerprint
from tests.test_run import _same_tables, interrupted_copy

FIVE = [{"profile": "jetson_nano", "count": 3}, {"profile": "agx_orin", "count": 2}]  # 3 + 2 on 2 hosts
CASES = {
    "federated (fedit)": {"method": {"name": "fedit", "rank": 4}},
    "split (sfl)": {"method": {"name": "sfl", "split_point": 1, "rank": 4}},
    "semi-sync, late carried": {"method": {"name": "sfl", "split_point": 1, "rank": 4},
                                "aggregation": {"mode": "semi_sync", "min_updates": 4, "late": "carry"}},
}


def _five(case: str, **changes) -> dict:
    return tiny_training_scenario(**CASES[case], fleet=FIVE, local_iterations=4, **changes)


@pytest.mark.parametrize("case", sorted(CASES))
def test_moving_clients_evens_the_hosts_and_changes_no_number(case: str, tmp_path: Path) -> None:
    """Two in-process hosts, five clients: without moving, 3 and 2 clients' steps; moving, an even share (the
    wrap-around schedule's ceil(steps / hosts)), and the same tables bit for bit."""
    raw = _five(case)
    _, still, still_extra = run_scenario(raw, tmp_path / "still", local=True, actors=2, balance=False)
    _, moved, extra = run_scenario(raw, tmp_path / "moved", local=True, actors=2)
    assert fingerprint(moved) == fingerprint(still)
    assert still_extra["client_migrations"] == 0 and extra["client_migrations"] > 0
    steps = extra["client_host_steps"]
    assert sum(steps) == sum(still_extra["client_host_steps"])
    if case.startswith("semi"):  # a late session carries over into the next round: evener, not exactly even
        assert max(steps) - min(steps) < max(still_extra["client_host_steps"]) - min(still_extra["client_host_steps"])
    else:
        assert max(steps) == math.ceil(sum(steps) / 2), steps
        assert max(still_extra["client_host_steps"]) > math.ceil(sum(steps) / 2)


def test_async_rounds_keep_their_clients_in_place(tmp_path: Path) -> None:
    raw = _five("split (sfl)", aggregation={"mode": "async", "concurrency": 5, "buffer": 2, "aggregations": 3})
    _, _, extra = run_scenario(raw, tmp_path / "run", local=True, actors=2)
    assert extra["client_migrations"] == 0


def test_on_ray_moved_clients_give_the_tables_of_one_host_also_after_a_lost_actor(ray_session, tmp_path) -> None:
    """Two client actors, five clients, moving: the tables of one in-process host; then client actor 1 is lost for
    good in the last round after clients moved, replaced, restored where each client was, and the round replayed
    with the same moves."""
    raw = _five("split (sfl)", rounds=2)
    _, alone, _ = run_scenario(raw, tmp_path / "alone", local=True, actors=1)
    _, moved, extra = run_scenario(raw, tmp_path / "moved", actors=2)
    assert extra["client_actors"] == 2 and extra["client_migrations"] > 0
    _same_tables(alone, moved)
    fault = {"round": 1, "after_steps": 14, "actor": 1, "restart": False}
    _, faulty, extra = run_scenario(raw | {"train": raw["train"] | {"kill_actor": [fault]}}, tmp_path / "faulty",
                                    actors=2)
    assert extra["faults"] == 1 and extra["client_migrations"] > 0
    _same_tables(alone, faulty)


def test_a_resume_puts_each_client_where_it_had_moved(tmp_path: Path) -> None:
    raw = _five("federated (fedit)", rounds=3, train={"eval_samples": 32, "lr": 0.01, "local": True, "actors": 2,
                                                      "keep_checkpoints": None})
    full_dir, full, extra = run_scenario(raw, tmp_path / "full")
    assert extra["client_migrations"] > 0
    cut = interrupted_copy(full_dir, tmp_path / "cut", rounds=2)
    _, resumed, _ = run(None, resume=cut)
    _same_tables(full, resumed)


@settings(max_examples=300, deadline=None)
@given(clients=st.integers(1, 40), hosts=st.integers(1, 16), iterations=st.integers(1, 12), rounds=st.integers(1, 3))
def test_no_host_runs_more_than_an_even_share_of_a_round(clients: int, hosts: int, iterations: int,
                                                         rounds: int) -> None:
    """Sessions that begin together and step in turn (a sync round of equal devices): each round, no host runs
    more than ceil(steps / hosts) of its steps, or one session's, whichever is more; with a host per client,
    nobody moves."""
    placement = Placement(hosts, iterations)
    for _ in range(rounds):
        before = list(placement.steps)
        for c in range(clients):
            placement.begin(c)
        for it in range(iterations):
            for c in range(clients):
                placement.step(c, it)
        ran = [a - b for a, b in zip(placement.steps, before, strict=True)]
        assert sum(ran) == clients * iterations
        assert max(ran) <= max(iterations, math.ceil(clients * iterations / hosts)), ran
        placement.new_round()
    if clients <= hosts:
        assert placement.moves == 0


@pytest.mark.parametrize(("clients", "hosts", "iterations", "steps", "moves"), [
    (5, 2, 40, [100, 100], 1),  # one client's last 20 steps move, once (each move stalls it a little)
    (16, 15, 10, [11] * 10 + [10] * 5, 9),  # a chain: each of 9 hosts takes one step of the excess
])
def test_a_round_is_evened_with_few_moves(clients, hosts, iterations, steps, moves) -> None:
    placement = Placement(hosts, iterations)
    for c in range(clients):
        placement.begin(c)
    for it in range(iterations):
        for c in range(clients):
            placement.step(c, it)
    assert sorted(placement.steps, reverse=True) == steps and placement.moves == moves
