"""SPEC §8: every kind of bad input gives one line naming the field (and line), exit code 2, no traceback,
and no run directory."""

from __future__ import annotations

import copy
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsplit_actors.cli import main
from hsplit_actors.errors import ScenarioError
from tests.conftest import small_scenario


def _plan(path: Path, tmp_path: Path, capsys) -> tuple[int, str]:
    out_dir = tmp_path / "runs"
    code = main(["plan", str(path), "--output-dir", str(out_dir), "--quiet"])
    err = capsys.readouterr().err
    assert not out_dir.exists() or not any(out_dir.iterdir()), "a failed run left a run directory behind"
    return code, err


CASES = {
    "typo'd key": (lambda s: s | {"rouns": 3}, ["rouns", "did you mean 'rounds'"]),
    "typo'd nested key": (lambda s: s | {"server": {"profile": "a100_40gb", "gpu": 2}}, ["server.gpu", "'gpus'"]),
    "wrong type": (lambda s: s | {"rounds": "ten"}, ["rounds", "integer"]),
    "unknown device": (lambda s: s | {"fleet": [{"profile": "jetson_nanoo"}]},
                       ["fleet[0].profile", "unknown device 'jetson_nanoo'", "did you mean 'jetson_nano'"]),
    "unknown method": (lambda s: s | {"method": {"name": "hsplit"}}, ["method", "unknown method 'hsplit'"]),
    "negative bandwidth": (lambda s: s | {"fleet": [{"profile": "jetson_nano", "uplink_mbps": -5}]},
                           ["fleet[0].uplink_mbps", "greater than 0"]),
    "negative bandwidth in a distribution": (
        lambda s: s | {"fleet": [{"profile": "jetson_nano", "downlink_mbps": {"uniform": [-1, 5]}}]},
        ["fleet[0].downlink_mbps", "greater than 0"]),
    "budget no configuration fits": (
        lambda s: s | {"fleet": [{"profile": "jetson_nano", "count": 2, "memory_gb": 0.001}]},
        ["memory_gb", "no device's budget fits any sfl configuration"]),
    "per-device configuration over budget": (
        lambda s: s | {"fleet": [{"profile": "jetson_nano", "memory_gb": 0.02}, {"profile": "agx_orin"}],
                       "method": {"name": "sfl", "split_point": 1, "per_device": {"jetson_nano": {"split_point": 4}}}},
        ["method.per_device.jetson_nano", "lower split_point or rank"]),
    "missing data file": (lambda s: s | {"data": {"dataset": "sst2", "path": "/nonexistent/train.tsv"}},
                          ["data.path", "does not exist"]),
    "split point out of range": (lambda s: s | {"method": {"name": "sfl", "split_point": 9}},
                                 ["method.split_point", "between 1 and 3"]),
    "unknown preset": (lambda s: s | {"model": {"preset": "gpt5"}}, ["model", "unknown preset 'gpt5'"]),
    "matrix the model lacks": (lambda s: s | {"method": {"name": "fedit", "targets": ["ffn_gate"]}},
                               ["method.targets", "ffn_gate"]),
    "unknown server": (lambda s: s | {"server": {"profile": "tpu"}}, ["server.profile", "unknown server GPU"]),
    "empty fleet": (lambda s: s | {"fleet": []}, ["fleet", "at least 1"]),
    "partition by an unknown attribute": (
        lambda s: s | {"data": {"dataset": "e2e", "partition": {"kind": "dirichlet", "by": "colour"}}},
        ["data.partition.by", "cannot partition e2e by 'colour'", "customer rating"]),
    "availability above 1": (lambda s: s | {"fleet": [{"profile": "jetson_nano", "availability": 1.5}]},
                             ["fleet[0].availability"]),
    "infinite compute": (lambda s: s | {"fleet": [{"profile": "jetson_nano", "flops": float("inf")}]},
                         ["fleet[0].flops", "finite"]),
    "infinite server memory": (lambda s: s | {"server": {"profile": "a100_40gb", "memory_gb": float("inf")}},
                               ["server.memory_gb", "finite"]),
    "negative seed": (lambda s: s | {"seed": -1}, ["seed", "greater than or equal to 0"]),
    "a method setting named by its path": (lambda s: s | {"method": {"name": "sfl", "rank": -1}},
                                           ["method.rank: input should be greater than 0"]),
    "a list entry named by its index": (lambda s: s | {"method": {"name": "hsplitlora", "ranks": [0, 2, -4]}},
                                        ["method.ranks[2]: input should be greater than or equal to 0"]),
    "seed of 2^63": (lambda s: s | {"seed": 2**63}, ["seed", "less than"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_scenario_is_one_line_exit_2(case: str, write_scenario, tmp_path: Path, capsys) -> None:
    mutate, expected = CASES[case]
    path = write_scenario(mutate(small_scenario()))
    code, err = _plan(path, tmp_path, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def test_error_names_the_file_and_line(write_scenario, tmp_path: Path, capsys) -> None:
    text = yaml.safe_dump(small_scenario(), sort_keys=False).replace("rounds: 2", "rounds: 2\nlocal_iteration: 4")
    path = write_scenario(text)
    line = text.splitlines().index("local_iteration: 4") + 1
    code, err = _plan(path, tmp_path, capsys)
    assert code == 2
    assert f"{path}:{line}: local_iteration: unknown key" in err
    assert "did you mean 'local_iterations'" in err


def test_invalid_yaml_and_missing_file(write_scenario, tmp_path: Path, capsys) -> None:
    code, err = _plan(write_scenario("fleet: [\n  - {profile: x\n"), tmp_path, capsys)
    assert code == 2 and "not valid YAML" in err
    code, err = _plan(tmp_path / "nope.yaml", tmp_path, capsys)
    assert code == 2 and "does not exist" in err


def test_yaml_a_scenario_does_not_accept(write_scenario, tmp_path: Path, capsys) -> None:
    """Duplicate keys (YAML lets the last win silently), aliases (a few hundred bytes can expand a million-fold),
    bytes that are not UTF-8, and a directory in place of the file."""
    text = yaml.safe_dump(small_scenario(), sort_keys=False)
    code, err = _plan(write_scenario(text + "rounds: 5\n"), tmp_path, capsys)
    line = len(text.splitlines()) + 1
    assert code == 2 and f":{line}: not valid YAML: key 'rounds' is given twice" in err and err.count("\n") == 1
    bomb = text.replace("model:", "anchor: &a [1, 2]\nmodel:") + "x: *a\n"
    code, err = _plan(write_scenario(bomb, "bomb.yaml"), tmp_path, capsys)
    assert code == 2 and "YAML aliases (*a) are not accepted" in err
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(text.replace("name: t", "name: caf\u00e9").encode("latin-1"))
    code, err = _plan(latin, tmp_path, capsys)
    offset = text.index("name: t") + len("name: caf")
    assert code == 2 and f"{latin}: not UTF-8 text: byte {offset} is 0xe9" in err
    code, err = _plan(tmp_path, tmp_path, capsys)
    assert code == 2 and "is a directory; give a scenario file" in err


def test_validate_command_and_real_process_exit_code(write_scenario, tmp_path: Path) -> None:
    """Through a real process: exit code 2 and a single stderr line, no traceback."""
    bad = write_scenario(small_scenario() | {"method": {"name": "nope"}})
    proc = subprocess.run([sys.executable, "-m", "hsplit_actors.cli", "validate", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "unknown method 'nope'" in proc.stderr
    good = write_scenario(small_scenario(), "good.yaml")
    proc = subprocess.run([sys.executable, "-m", "hsplit_actors.cli", "validate", str(good)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout


def test_some_infeasible_clients_are_excluded_with_a_warning(write_scenario, tmp_path: Path, capsys) -> None:
    """SPEC §5: a partly infeasible fleet runs without them, says so, and marks them in the clients table."""
    from hsplit_actors.runs import read_run

    scenario = small_scenario(fleet=[{"profile": "jetson_nano", "count": 2, "memory_gb": 0.001},
                                     {"profile": "agx_orin", "count": 3}])
    out = tmp_path / "run"
    code = main(["plan", str(write_scenario(scenario)), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    assert "warning: 2 of 5 clients (jetson_nano x2) cannot hold sfl's configuration" in captured.err
    tables = read_run(out)
    assert tables.clients["feasible"].tolist() == [False, False, True, True, True]
    assert set(tables.events.loc[tables.events["client"] >= 0, "client"]) == {2, 3, 4}
    # what they would need, not 0.0: the (uniform) configuration the others hold, more than they have
    short = tables.clients[~tables.clients["feasible"]]
    assert (short["memory_estimate_gb"] > short["memory_gb"]).all()
    assert (short["memory_estimate_gb"] == tables.clients.loc[2, "memory_estimate_gb"]).all()


@pytest.mark.parametrize("case, fragment", [
    ("budget no configuration fits", "no device's budget fits"),
    ("per-device configuration over budget", "lower split_point or rank"),
])
def test_validate_refuses_what_plan_refuses(case: str, fragment: str, write_scenario, capsys) -> None:
    mutate, _ = CASES[case]
    assert main(["validate", str(write_scenario(mutate(small_scenario())))]) == 2
    assert fragment in capsys.readouterr().err


def test_fault_injection_without_actors_is_refused_by_validate(write_scenario, capsys) -> None:
    raw = small_scenario(train={"local": True, "kill_actor": [{"round": 0}]})
    assert main(["validate", str(write_scenario(raw))]) == 2
    assert "train: fault injection (kill_actor) kills Ray actors; unset local" in capsys.readouterr().err



def test_a_fault_for_a_client_actor_the_run_lacks_is_one_line_and_leaves_no_directory(write_scenario, tmp_path: Path,
                                                                                       capsys) -> None:
    from tests.conftest import tiny_training_scenario

    raw = tiny_training_scenario(train={"actors": 1, "kill_actor": [{"round": 0, "actor": 1}]})
    out = tmp_path / "run"
    assert main(["run", str(write_scenario(raw)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.kill_actor: names client actor 1, but this run has 1 client actor (numbered from 0)" in err
    assert len(err.splitlines()) == 1 and not out.exists()

SST2 = {"dataset": "sst2", "batch_size": 4, "seq_len": 32}
MORE_CASES = {
    "zero layers": (lambda s: s | {"model": {"preset": "gpt2-small", "overrides": {"n_layer": 0}}},
                    ["model.overrides.n_layer: n_layer must be at least 1 (got 0)"]),
    "a dimension given as text": (
        lambda s: s | {"model": {"preset": "gpt2-small", "overrides": {"n_layer": 4, "n_head": "4"}}},
        ["model.overrides.n_head: n_head must be a whole number (got '4')"]),
    "heads that do not divide the width": (
        lambda s: s | {"model": {"preset": "gpt2-small", "overrides": {"n_layer": 4, "n_embd": 130, "n_head": 4}}},
        ["model.overrides.n_head: n_head (4) must divide n_embd (130)"]),
    "a misspelt override": (lambda s: s | {"model": {"preset": "gpt2-small", "overrides": {"n_layers": 4}}},
                            ["model.overrides.n_layers: a gpt2 config has no key 'n_layers'; did you mean 'n_layer'"]),
    "one block for a split method": (
        lambda s: s | {"model": {"preset": "minilm-l6", "overrides": {"num_hidden_layers": 1}}},
        ["model.overrides.num_hidden_layers: sfl splits the model between blocks: it needs at least 2 blocks"]),
    "a distribution of an unknown form": (
        lambda s: s | {"fleet": [{"profile": "jetson_nano", "uplink_mbps": {"unifrom": [1, 5]}}]},
        ["fleet[0].uplink_mbps: expected a number > 0 or one of", "(got a mapping with keys unifrom)"]),
    "availability of an unknown form": (
        lambda s: s | {"fleet": [{"profile": "jetson_nano", "availability": {"window": [[0, 5]]}}]},
        ["fleet[0].availability: expected a probability in [0, 1] or {windows:"]),
    "a misspelt key inside a distribution": (
        lambda s: s | {"fleet": [{"profile": "jetson_nano", "flops": {"lognormal": {"median": 1e12, "sigm": 1}}}]},
        ["fleet[0].flops.lognormal.sigm: unknown key 'sigm'; did you mean 'sigma'?"]),
    "bounds in the wrong order": (
        lambda s: s | {"fleet": [{"profile": "jetson_nano", "uplink_mbps": {"uniform": [5, 1]}}]},
        ["fleet[0].uplink_mbps: uniform bounds must be [low, high]"]),
    "more samples per client than the data set holds": (
        lambda s: s | {"data": SST2 | {"samples_per_client": 10**6}},
        ["data.samples_per_client: 1000000 exceeds the", "samples of", "lower it to at most"]),
    "a validation split as large as the data set": (
        lambda s: s | {"data": SST2 | {"validation_samples": 10**6}},
        ["data.validation_samples: 1000000 leaves nothing of the"]),
    "a fleet of 10^12 devices": (lambda s: s | {"fleet": [{"profile": "jetson_nano", "count": 10**12}]},
                                 ["would need about", "1,000,000,000,000 devices", "or the fleet's counts"]),
    "a billion rounds": (lambda s: s | {"rounds": 10**9}, ["would need about", "lower rounds, local_iterations"]),
    "1e8 local iterations": (lambda s: s | {"local_iterations": 10**8}, ["would need about"]),
    # found by the mutation test below: each crashed (an empty draw; per-block tables of 10^20 blocks)
    "a choice of no device": (lambda s: s | {"fleet": [{"profile": {"choice": {}}, "count": 3}]},
                              ["fleet[0].profile.choice: dictionary should have at least 1 item"]),
    "10^20 layers": (lambda s: s | {"model": {"preset": "gpt2-small", "overrides": {"n_layer": 10**20}}},
                     ["model.overrides.n_layer: n_layer must be at most 10,000"]),
    # each validated, then ended in a ZeroDivisionError traceback in HSplitLoRA's latency (a bandwidth of 0 or inf)
    "a lognormal beyond the float range": (
        lambda s: s | {"fleet": [{"profile": "jetson_nano", "count": 20,
                                  "uplink_mbps": {"lognormal": {"median": 10, "sigma": 900}}}]},
        ["fleet[0].uplink_mbps: lognormal {median: 10, sigma: 900} drew inf for", "lower sigma"]),
    "a choice of a zero bandwidth": (
        lambda s: s | {"fleet": [{"profile": "jetson_nano", "count": 3, "uplink_mbps": {"choice": {0: 1, 5: 1}}}]},
        ["fleet[0].uplink_mbps.choice[0]: input should be greater than 0 (got 0)"]),
}


@pytest.mark.parametrize("command", ["validate", "plan"])
@pytest.mark.parametrize("case", sorted(MORE_CASES))
def test_more_bad_scenarios_are_one_line_exit_2(case: str, command: str, write_scenario, tmp_path: Path,
                                                capsys) -> None:
    """validate refuses what plan refuses, with the same line; nothing is allocated or written first."""
    mutate, expected = MORE_CASES[case]
    path = write_scenario(mutate(small_scenario()))
    out = tmp_path / "runs"
    args = ["validate", str(path)] if command == "validate" else ["plan", str(path), "--output-dir", str(out),
                                                                   "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}"), err
    assert "function-after" not in err and "Traceback" not in err
    for fragment in expected:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert not out.exists()


def test_pydantic_union_internals_never_reach_the_user(write_scenario, tmp_path: Path, capsys) -> None:
    """Every number-or-distribution field, given a mapping of no known form, names the field and the forms."""
    for field in ("flops", "memory_gb", "uplink_mbps", "downlink_mbps", "latency_ms"):
        raw = small_scenario(fleet=[{"profile": "jetson_nano", field: {"normal": {"mean": 1}}}])
        code, err = _plan(write_scenario(raw), tmp_path, capsys)
        assert code == 2 and f"fleet[0].{field}: expected a number > 0 or one of" in err, err
        assert "more problem" not in err and "Dist" not in err


def test_a_large_fleet_file_validates(write_scenario, tmp_path: Path, capsys) -> None:
    """20,000 one-device entries through the whole of `validate`: the file, the schema, every variant `hsplit
    compare` would run and the feasibility checks. How fast (140,000 took 42 s before issue 13) is a benchmark's
    question: `bench/validate_large_fleet.py`, figures in BENCHMARKS.md."""
    entry = "  - {profile: jetson_nano, flops: %d, uplink_mbps: %.1f, availability: 0.8}\n"
    fleet = "fleet:\n" + "".join(entry % (1e11 + i, 5 + i % 90) for i in range(20_000))
    text = yaml.safe_dump(small_scenario(), sort_keys=False)
    head, tail = text.split("fleet:\n", 1)
    tail = tail[tail.index("server:"):]
    path = write_scenario(head + fleet + tail)
    assert main(["validate", str(path)]) == 0
    assert "20000 devices" in capsys.readouterr().out


def test_the_work_estimate_follows_the_schedule(write_scenario, capsys) -> None:
    """validate prints client-iterations = rounds x expected participants x local iterations (sync), and
    (aggregations x buffer + concurrency) x local iterations (async); run adds the training steps."""
    from hsplit_actors.scenario import parse_scenario
    from hsplit_actors.workload import estimate

    raw = small_scenario(rounds=7, local_iterations=5,
                         fleet=[{"profile": "jetson_nano", "count": 4}, {"profile": "agx_orin", "count": 6,
                                                                         "availability": 0.5}])
    assert main(["validate", str(write_scenario(raw))]) == 0
    out = capsys.readouterr().out
    assert "estimate: 10 devices, 245 client-iterations" in out and "run: 245 training steps" in out
    async_raw = raw | {"aggregation": {"mode": "async", "concurrency": 4, "buffer": 2, "aggregations": 9}}
    assert estimate(parse_scenario(yaml.safe_dump(async_raw))).client_iterations == (9 * 2 + 4) * 5
    base, longer = (estimate(parse_scenario(yaml.safe_dump(raw | {"rounds": r}))) for r in (7, 70))
    assert longer.events == 10 * base.events and longer.peak_bytes > base.peak_bytes


def test_a_plan_larger_than_memory_is_refused_before_work() -> None:
    from hsplit_actors.scenario import parse_scenario
    from hsplit_actors.workload import check

    scenario = parse_scenario(yaml.safe_dump(small_scenario(rounds=1000)))
    work = check(scenario, memory=10**12)  # fits
    with pytest.raises(ScenarioError, match=r"s.yaml: this scenario's tables would need about .* available; "):
        check(scenario, "s.yaml", memory=work.peak_bytes - 1)


# -- every mutation of a valid scenario validates and plans, or is refused with one line -----------------------
ODD_VALUES = [None, -1, 0, 1, 3, 0.5, -0.5, 1e300, 10**20, 2**63, "x", "", True, [], {}, [1, 2], {"a": 1},
              {"uniform": [1, 2]}, {"lognormal": {"median": 2}}, float("nan"), float("inf"), "1e9", [[0, 5]]]
BASES = [
    small_scenario(),
    small_scenario(method={"name": "hsplitlora", "ranks": [0, 2, 4]},
                   fleet=[{"profile": "jetson_nano", "count": 2, "availability": {"windows": [[0, 50]], "period": 60}},
                          {"profile": {"choice": {"orin_nano": 1, "agx_orin": 2}}, "count": 3}]),
    small_scenario(aggregation={"mode": "async", "concurrency": 4, "buffer": 2, "aggregations": 3,
                                "staleness": {"kind": "polynomial", "a": 0.5}},
                   compare={"variants": {"a": {"method": "splitlora", "rank": 2}}, "seeds": [0, 1]}),
]


def _paths(value, prefix=()):
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, (*prefix, key))


def _mutate(raw: dict, path: tuple, how: str, new) -> None:
    if not path:
        raw["extra_top_level_key"] = new
        return
    *parents, last = path
    holder = raw
    for part in parents:
        holder = holder[part]
    if how == "delete" and isinstance(holder, dict):
        del holder[last]
    elif how == "delete":
        holder.pop(last)
    elif how == "add key" and isinstance(holder[last], dict):
        holder[last]["unexpected"] = new
    elif how == "wrap":
        holder[last] = [holder[last]]
    elif how == "nest":
        holder[last] = {"value": holder[last]}
    else:
        holder[last] = new


@st.composite
def mutated_scenarios(draw) -> dict:
    raw = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(raw))))
        how = draw(st.sampled_from(["replace", "delete", "add key", "wrap", "nest"]))
        _mutate(raw, path, how, copy.deepcopy(draw(st.sampled_from(ODD_VALUES))))  # never share one
    return raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(raw=mutated_scenarios())
def test_any_mutation_validates_and_plans_or_is_refused_in_one_line(raw: dict, tmp_path: Path, capsys) -> None:
    """Types, signs, sizes, keys and nesting changed at random in valid scenarios: never a traceback (an
    exception here fails the test), exit 0 or 2, and a refusal is one line."""
    case = Path(tempfile.mkdtemp(dir=tmp_path))  # hypothesis may try the same example twice
    path = case / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("error: "), err
        return
    code = main(["plan", str(path), "--out", str(case / "plan"), "--quiet"])
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("error: "), err
    else:
        assert (case / "plan" / "meta.json").is_file()


def test_validate_refuses_a_comparison_variant_too_large_to_run(write_scenario, capsys) -> None:
    """`hsplit compare` would refuse it, so validate does, naming the file and the variant (plan runs the
    scenario's own method and is not concerned)."""
    path = write_scenario(small_scenario(compare={"variants": {"long": {"method": "sfl", "rounds": 10**9}}}))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: compare.variants.long: this scenario's tables would need about")
    assert err.count("\n") == 1
