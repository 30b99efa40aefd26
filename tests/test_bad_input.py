"""SPEC §8: every kind of bad input gives one line naming the field (and line), exit code 2, no traceback,
and no run directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hsplit_actors.cli import main
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
