"""The structure a new aggregation mode or method relies on (issue 19): a mode is one class plus its schema
entry, it drives the simulation only through the narrow `Engine` interface, and an aggregation reaches the
executor as one call that publishes exactly once."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from hsplit_actors.engine import Executor
from hsplit_actors.engine.schedules import SCHEDULES, Engine, Schedule, register
from hsplit_actors.preparation import prepare
from hsplit_actors.scenario import parse_scenario
from hsplit_actors.scenario.schema import AGGREGATION_KEYS
from hsplit_actors.simulation import simulate
from tests.conftest import REPO, small_scenario

SCHEDULE_FILES = sorted((REPO / "hsplit_actors" / "engine" / "schedules").glob("*.py"))


class Sequential(Schedule):
    """Test-only mode: each round's participants train one after another, each update aggregated alone."""

    def process(self):
        engine, env = self.engine, self.engine.env
        for rnd in range(engine.scenario.rounds):
            self.position = rnd
            for c in engine.participants(rnd).tolist():
                t_start, wall_start = env.now, time.perf_counter()
                engine.begin_progress(1)
                engine.start_session(c, rnd, True)
                s = yield engine.uploads.get()
                yield from self.close(rnd, t_start, wall_start, 1, [s] if s.outcome == "update" else [])
        engine.finished.succeed()


@pytest.fixture
def sequential_mode(monkeypatch):
    monkeypatch.setitem(AGGREGATION_KEYS, "sequential", set())  # its schema entry: no settings
    monkeypatch.setitem(SCHEDULES, "sequential", Sequential)
    register("sequential")(Sequential)
    yield


def _plan(raw: dict, executor: Executor | None = None):
    scenario = parse_scenario(yaml.safe_dump(raw))
    return simulate(scenario, prepare(scenario), executor)[0]


def test_a_new_mode_is_one_class_and_its_schema_entry(sequential_mode) -> None:
    tables = _plan(small_scenario(aggregation={"mode": "sequential"}, method={"name": "splitlora", "rank": 4}))
    rounds, events = tables.rounds, tables.events
    assert len(rounds) == 2 * 6 and rounds.aggregated.all()  # one aggregation per participant per round
    assert rounds.version.tolist() == list(range(1, 13))
    iterations = events[events.iteration >= 0].groupby(["round", "client"])
    sessions = iterations.agg(t0=("t_start", "min"), t1=("t_end", "max")).sort_values("t0")
    assert (sessions.t0.to_numpy()[1:] >= sessions.t1.to_numpy()[:-1]).all()  # never two sessions at once


def test_an_unregistered_mode_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(Exception, match="input should be 'sync', 'semi_sync' or 'async'"):
        parse_scenario(yaml.safe_dump(small_scenario(aggregation={"mode": "sequential"})))


def _engine_members() -> set[str]:
    return {n for n in vars(Engine) if not n.startswith("_")} | set(Engine.__annotations__)


@pytest.mark.parametrize("path", SCHEDULE_FILES, ids=lambda p: p.name)
def test_schedules_reach_the_simulation_only_through_the_engine_interface(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "hsplit_actors.engine.sim" not in imported  # no cycle: the simulation imports the schedules
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and (isinstance(node.value, ast.Name) and node.value.id == "engine"
                 or isinstance(node.value, ast.Attribute) and node.value.attr == "engine")}
    assert used <= _engine_members(), used - _engine_members()


def test_the_simulation_imports_its_schedules_at_module_level() -> None:
    tree = ast.parse((REPO / "hsplit_actors" / "engine" / "sim.py").read_text())
    nested = [n for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for n in ast.walk(f)
              if isinstance(n, ast.Import | ast.ImportFrom)]
    assert not nested


class Recording(Executor):
    """Counts aggregation calls and publishes once per call, as the protocol asks."""

    def __init__(self, publish_times: int = 1) -> None:
        self.steps, self.publish_times = [], publish_times

    def aggregate(self, step) -> dict:
        self.steps.append(step)
        for _ in range(self.publish_times):
            step.publish()
        return {}


@pytest.mark.parametrize("aggregation", [{"mode": "sync"}, {"mode": "semi_sync", "min_updates": 4},
                                         {"mode": "async", "concurrency": 4, "buffer": 2, "aggregations": 5,
                                          "staleness": "polynomial", "server_lr": 0.5}])
def test_each_aggregation_is_one_executor_call_with_weights_and_the_server_rate(aggregation) -> None:
    executor = Recording()
    tables = _plan(small_scenario(aggregation=aggregation), executor)
    assert len(executor.steps) == int(tables.rounds.aggregated.sum())
    assert [s.version for s in executor.steps] == list(range(1, len(executor.steps) + 1))
    for step in executor.steps:
        assert [u.session.client for u in step.updates] == sorted(u.session.client for u in step.updates)
        assert step.server_lr == aggregation.get("server_lr", 1.0)
        for u in step.updates:
            assert u.staleness == step.version - 1 - u.session.version
            expected = (u.staleness + 1) ** -0.5 if aggregation.get("staleness") else 1.0
            assert u.weight == pytest.approx(expected)
    assert np.array_equal(tables.rounds.version[tables.rounds.aggregated], [s.version for s in executor.steps])


@pytest.mark.parametrize("times", [0, 2])
def test_an_executor_must_publish_each_aggregation_exactly_once(times: int) -> None:
    with pytest.raises(AssertionError, match="publish"):
        _plan(small_scenario(), Recording(times))


# -- one registry of methods -------------------------------------------------------------------------------------
def test_the_schema_and_the_strategies_read_one_registry() -> None:
    from hsplit_actors.methods import METHODS
    from hsplit_actors.scenario import schema

    assert list(METHODS) == schema.METHOD_NAMES == [schema.method_name(s) for s in schema.METHOD_SPECS]
    assert [METHODS[n].settings for n in METHODS] == schema.METHOD_SPECS
    assert [n for n in METHODS if METHODS[n].settings.splits_model] == schema.SPLIT_METHODS


@pytest.fixture
def solo_method():
    """A test-only baseline: its settings class and its strategy, written here, registered with one call."""
    from typing import ClassVar, Literal

    from pydantic import PositiveInt

    from hsplit_actors.methods import METHODS, register
    from hsplit_actors.methods.base import Assignment, Strategy, single_config
    from hsplit_actors.scenario import schema

    class SoloSpec(schema._MethodBase):
        name: Literal["solo_test"]
        splits_model: ClassVar[bool] = True
        split_point: PositiveInt = 1

    class Solo(Strategy):
        """Every device at the configured split; only the first device takes part."""

        settings = SoloSpec

        def configure(self, round_: int, fleet) -> Assignment:
            assignment = single_config(self.uniform(self.spec.split_point), np.ones(len(fleet), dtype=bool))
            assignment.index[1:] = -1
            return assignment

    register(Solo)
    yield
    del METHODS["solo_test"]
    schema.METHOD_SPECS.remove(SoloSpec)
    schema.rebuild_method_schema()


def test_a_new_baseline_is_one_file_its_settings_class_and_one_register(solo_method) -> None:
    from hsplit_actors.scenario.schema import SPLIT_METHODS

    assert "solo_test" in SPLIT_METHODS
    with pytest.warns(UserWarning, match="5 of 6 clients"):  # the usual warning for excluded clients
        tables = _plan(small_scenario(method={"name": "solo_test", "split_point": 3}))
    clients = tables.clients
    assert clients.split_point.tolist() == [3] + [-1] * 5 and clients.feasible.tolist() == [True] + [False] * 5
    with pytest.raises(Exception, match="split_point"):  # its settings are checked like any method's
        parse_scenario(yaml.safe_dump(small_scenario(method={"name": "solo_test", "split_point": 0})))
    raw = small_scenario(compare={"methods": ["solo_test", "splitlora"]})
    assert parse_scenario(yaml.safe_dump(raw)).compare.methods == ["solo_test", "splitlora"]


@pytest.mark.parametrize("shared", [False, True])
def test_a_capability_is_one_declaration_that_the_engine_asks_for(solo_method, monkeypatch, shared: bool) -> None:
    """The test-only method gains SFL-V2's shared server set by declaring it, nothing else: the engine then
    batches its server jobs and counts one server-side set in memory; without it, batching is refused with the
    usual warning and the server holds a copy per client."""
    import warnings

    from hsplit_actors.engine.durations import BatchingIgnored
    from hsplit_actors.methods import METHODS, SharedServerSet
    from hsplit_actors.preparation import server_memory_gb

    monkeypatch.setattr(METHODS["solo_test"], "capabilities", (SharedServerSet(),) if shared else ())
    raw = small_scenario(method={"name": "solo_test", "split_point": 2},
                         server={"profile": "a100_40gb", "gpus": 1, "batching": {"max_jobs": 4}})
    scenario = parse_scenario(yaml.safe_dump(raw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        setup = prepare(scenario)
    assert any(issubclass(w.category, BatchingIgnored) for w in caught) is not shared
    assignment = setup.strategy.configure(0, setup.fleet)
    assignment.index[:] = 0  # every device on the one configuration: six per-client copies, or one shared set
    unbatched = scenario.model_copy(update={"server": scenario.server.model_copy(update={"batching": None})})
    memory = server_memory_gb(unbatched, assignment, setup.strategy)
    monkeypatch.setattr(setup.strategy, "capabilities", () if shared else (SharedServerSet(),))
    assert (server_memory_gb(unbatched, assignment, setup.strategy) > memory) is shared


def test_an_unregistered_method_is_refused_naming_the_registered_ones() -> None:
    from hsplit_actors.scenario.schema import METHOD_NAMES

    with pytest.raises(Exception) as refused:
        parse_scenario(yaml.safe_dump(small_scenario(method={"name": "solo_test"})))
    assert "solo_test" in str(refused.value) and all(n in str(refused.value) for n in METHOD_NAMES)


def test_the_model_package_exports_every_name_it_imports_lazily() -> None:
    """`hsplit_actors.model` resolves its names on first use (so `model.factors` stays free of peft): what it
    lists in __all__ must be exactly what it can resolve, and each must resolve."""
    import hsplit_actors.model as model

    assert sorted(model.__all__) == sorted(model._WHERE)
    assert all(getattr(model, name) is not None for name in model.__all__)
