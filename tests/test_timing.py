"""Measured timing profiles: interpolation, how phases are composed from pieces, the engine using them, a real
(tiny) `hsplit calibrate`, and bad profiles refused in one line naming the file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

from hsplit_actors.cli import main
from hsplit_actors.costmodel import ClientConfig
from hsplit_actors.scenario.load import architecture
from hsplit_actors.timing import load_profile
from hsplit_actors.timing.profile import from_data
from tests.conftest import REPO, small_scenario
from tests.test_engine import run
from tests.timing_helpers import optimizer_time, piece_time, synthetic_profile, write_profile


@pytest.fixture(scope="module")
def arch():
    scenario, _, _, _ = run(small_scenario())
    return architecture(scenario)


@pytest.fixture
def profile(arch):
    return from_data(synthetic_profile(arch), "<synthetic>")


@pytest.mark.parametrize("name", ["embed_fwd", "block_fwd_r4", "block_fwdbwd_r16", "head_fwdbwd"])
@pytest.mark.parametrize(("batch", "seq"), [(1, 8), (3, 16), (5, 24), (7.5, 40), (8, 64), (20, 32), (64, 8)])
def test_interpolation_reproduces_a_bilinear_law_in_and_above_the_grid(profile, name, batch, seq) -> None:
    assert profile.piece(name, batch, seq, 2) == pytest.approx(piece_time(name, batch, seq), rel=1e-12)


def test_phases_are_composed_from_the_pieces_as_autograd_runs_them(profile, arch) -> None:
    n, r, b, s = arch.n_layers, 16, 3, 32  # seq on the grid: the context grows with seq^2
    config = ClientConfig.uniform(arch, 2, r, arch.matrices)
    fwd, bwd, server = profile.phases(arch, config, b, s)

    def p(name):
        return piece_time(name, b, s)

    opt = optimizer_time(r)
    assert fwd == pytest.approx(p("embed_fwd") + p("context") + 2 * p("block_fwd_r16"), rel=1e-12)
    # the first block's input needs no gradient: its backward starts from the all-adapted measurement at the
    # smallest grid rank, with the adapters' increments swapped for rank 16's; the second block's is plain
    first = (p("block_fwdbwd_noinput_r4") - p("block_fwd_r4")) + (p("block_fwdbwd_r16") - p("block_fwd_r16")) - (
        p("block_fwdbwd_r4") - p("block_fwd_r4"))
    assert bwd == pytest.approx(first + (p("block_fwdbwd_r16") - p("block_fwd_r16")) + 2 * opt, rel=1e-9)
    assert server == pytest.approx(p("context") + (n - 2) * (p("block_fwdbwd_r16") + opt) + p("head_fwdbwd"),
                                   rel=1e-12)
    # a batch of 3 jobs is the server part at 3 x the batch
    batched = profile.phases(arch, config, b, s, jobs=3)[2]
    b3 = 3 * b
    assert batched == pytest.approx(piece_time("context", b3, s) + (n - 2) * (piece_time("block_fwdbwd_r16", b3, s)
                                    + opt) + piece_time("head_fwdbwd", b3, s), rel=1e-12)
    # an unadapted matrix adds nothing; half the matrices adapted add half the increment
    bare = profile.phases(arch, ClientConfig.uniform(arch, 2, 0, arch.matrices), b, s)[0]
    half = profile.phases(arch, ClientConfig.uniform(arch, 2, r, arch.matrices[:3]), b, s)[0]
    assert half - bare == pytest.approx((fwd - bare) / 2, rel=1e-9)


def test_the_engine_takes_durations_from_the_profiles_it_is_given(tmp_path, arch) -> None:
    path = write_profile(tmp_path / "p.yaml", arch)
    fleet = small_scenario()["fleet"]
    fleet[0] = fleet[0] | {"timing": str(path)}
    raw = small_scenario(fleet=fleet, server={"profile": "a100_40gb", "timing": str(path)})
    _, setup, tables, _ = run(raw)
    _, _, plain, _ = run(small_scenario())
    loaded = load_profile(path)
    config = setup.strategy.configure(0, setup.fleet).configs[0]
    fwd, bwd, server = loaded.phases(arch, config, 4, 32)
    ev, old = tables.events, plain.events
    ev_d, old_d = ev["t_end"] - ev["t_start"], old["t_end"] - old["t_start"]
    profiled = ev["client"].isin(np.flatnonzero(setup.fleet.group == 0))
    np.testing.assert_allclose(ev_d[profiled & (ev["phase"] == "client_fwd")], fwd, rtol=1e-9)
    np.testing.assert_allclose(ev_d[profiled & (ev["phase"] == "client_bwd")], bwd, rtol=1e-9)
    np.testing.assert_allclose(ev_d[ev["phase"] == "server"], server, rtol=1e-9)
    # the other fleet entries keep the FLOPs model's durations
    others = ~profiled & (ev["phase"] == "client_fwd")
    np.testing.assert_allclose(np.sort(ev_d[others]), np.sort(old_d[~old["client"].isin(
        np.flatnonzero(setup.fleet.group == 0)) & (old["phase"] == "client_fwd")]), rtol=1e-9)


def test_armsc_estimates_latency_with_the_profiles(tmp_path, arch) -> None:
    """A server measured as very slow makes ARMSC move work onto the devices: deeper splits than the default model
    chooses for the same fleet with a very fast server."""
    slow = tmp_path / "slow.yaml"
    write_profile(slow, arch, scale=1000.0)
    method = {"name": "hsplitlora", "ranks": [0, 4, 8], "split_objective": "latency", "max_client_share": 1.0}
    fleet = [{"profile": "agx_orin", "count": 2, "memory_gb": 8}, {"profile": "orin_nano", "count": 2}]
    fast = {"profile": "a100_40gb", "flops": 1e16, "launch_us": 0}
    _, plain, _, _ = run(small_scenario(method=method, fleet=fleet, server=fast))
    _, timed, _, _ = run(small_scenario(method=method, fleet=fleet, server=fast | {"timing": str(slow)}))

    def splits(setup):
        assignment = setup.strategy.configure(0, setup.fleet)
        return np.array([assignment.configs[i].split_point for i in assignment.index])

    assert (splits(timed) >= splits(plain)).all() and (splits(timed) > splits(plain)).any()


def _tiny_model_dir(tmp_path):
    from transformers import GPT2Config

    directory = tmp_path / "tiny-gpt2"
    GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=64).save_pretrained(directory)
    return directory


def test_calibrate_measures_a_real_model_and_plan_uses_its_profile(tmp_path, write_scenario, capsys) -> None:
    model = _tiny_model_dir(tmp_path)
    out = tmp_path / "tiny.yaml"
    assert main(["calibrate", "--model", str(model), "--seq", "8,16", "--batch", "1,4", "--ranks", "4",
                 "--threads", "1", "--min-run-time", "0.01", "--out", str(out), "--quiet"]) == 0
    assert "passes (relative IQR)" in capsys.readouterr().out
    raw = yaml.safe_load(out.read_text())
    assert raw["grid"] == {"seq": [8, 16], "batch": [1, 4], "ranks": [0, 4], "threads": [1]}
    assert raw["versions"]["torch"] == torch.__version__ and raw["machine"]["cores"]
    tables = raw["tables"][1]
    for name, grid in tables.items():
        assert np.all(np.asarray(grid["median"]) > 0), name
        assert np.all(np.asarray(grid["iqr"]) >= 0), name
    # more work takes longer: forward+backward over forward, 4 samples over 1
    fwd, both = np.asarray(tables["block_fwd_r4"]["median"]), np.asarray(tables["block_fwdbwd_r4"]["median"])
    assert (both > fwd).mean() >= 0.75
    scenario = small_scenario(model={"path": str(model)}, data={"dataset": "synthetic", "batch_size": 2,
                                                                 "seq_len": 12},
                              method={"name": "splitlora", "split_point": 1, "rank": 4},
                              server={"profile": "a100_40gb", "timing": str(out)})
    path = write_scenario(scenario)
    assert main(["plan", str(path), "--out", str(tmp_path / "plan"), "--quiet"]) == 0
    meta = json.loads((tmp_path / "plan" / "meta.json").read_text())
    assert meta["server_busy_s"] > 0
    assert main(["calibrate", "--model", str(model), "--out", str(out), "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_calibrate_on_cuda(tmp_path) -> None:
    model = _tiny_model_dir(tmp_path)
    out = tmp_path / "cuda.yaml"
    assert main(["calibrate", "--model", str(model), "--device", "cuda", "--seq", "8,16", "--batch", "1,4",
                 "--ranks", "4", "--min-run-time", "0.01", "--out", str(out), "--quiet"]) == 0
    assert load_profile(out).device == "cuda"


@pytest.mark.parametrize(("extra", "message"), [
    (["--out", "{tmp}"], "is a folder; give the profile file to write"),
    (["--out", "{tmp}/p.yaml", "--min-run-time", "-1"], "--min-run-time must be a positive number"),
    (["--out", "{tmp}/p.yaml", "--model", "no-such-model"], "neither a preset"),
    (["--out", "/proc/p.yaml"], "cannot write /proc/p.yaml"),
])
def test_bad_calibrate_arguments_are_one_line(extra, message, tmp_path, capsys) -> None:
    args = ["calibrate", "--model", "minilm-l6", "--seq", "16", "--batch", "1", "--ranks", "4", "--threads", "1",
            "--min-run-time", "0.01", "--quiet"] + [a.format(tmp=tmp_path) for a in extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where there is no CUDA")
def test_calibrate_on_cuda_without_cuda_is_one_line(tmp_path, capsys) -> None:
    assert main(["calibrate", "--model", "minilm-l6", "--device", "cuda", "--out", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no CUDA device" in err


# -- bad profiles: exit 2, one line, naming the profile file ------------------------------------------------------
def _bad(arch, tmp_path, how: str):
    path = tmp_path / "bad.yaml"
    raw = synthetic_profile(arch)
    if how == "missing":
        return tmp_path / "nowhere.yaml", "no such timing profile"
    if how == "binary":
        path.write_bytes(bytes(range(256)) * 4)
        return path, "not a text file"
    if how == "not yaml":
        path.write_text("kind: [unclosed\n")
        return path, "not readable YAML"
    if how == "a list":
        path.write_text("- 1\n- 2\n")
        return path, "not a timing profile"
    if how == "wrong model":
        raw["model"]["hidden"] = arch.hidden * 2
        expect = "measured for another model"
    elif how == "wrong dtype":
        raw["dtype"] = "bfloat16"
        expect = "measured in bfloat16, the scenario trains in float32"
    elif how == "seq not covered":
        raw["grid"]["seq"] = [8, 16]
        for table in raw["tables"][2].values():
            table["median"] = table["median"][:2]
        expect = "its grid covers seq 8..16, the scenario's seq_len is 32"
    elif how == "batch not covered":
        raw["grid"]["batch"] = [1, 2]
        for table in raw["tables"][2].values():
            table["median"] = [row[:2] for row in table["median"]]
        expect = "its grid ends at batch 2, the scenario's batch_size is 4"
    elif how == "ragged table":
        raw["tables"][2]["block_fwd_r4"]["median"][0] = [1.0]
        expect = "tables.2.block_fwd_r4"
    elif how == "negative time":
        raw["tables"][2]["head_fwd"]["median"][1][1] = -1.0
        expect = "non-negative seconds"
    elif how == "nan":
        raw["tables"][2]["context"]["median"][0][0] = math.nan
        expect = "non-negative seconds"
    elif how == "missing piece":
        del raw["tables"][2]["head_fwdbwd"]
        expect = "lacks head_fwdbwd"
    elif how == "no tables for a thread count":
        raw["grid"]["threads"] = [1, 2]
        expect = "no tables for 1 threads"
    elif how == "other format":
        raw["format"] = 7
        expect = "profile format 7"
    else:
        raise AssertionError(how)
    path.write_text(yaml.safe_dump(raw))
    return path, expect


BAD = ["missing", "binary", "not yaml", "a list", "wrong model", "wrong dtype", "seq not covered",
       "batch not covered", "ragged table", "negative time", "nan", "missing piece", "no tables for a thread count",
       "other format"]


@pytest.mark.parametrize("how", BAD)
@pytest.mark.parametrize("where", ["server", "fleet"])
def test_a_bad_profile_is_refused_in_one_line_naming_it(how, where, arch, tmp_path, write_scenario, capsys) -> None:
    profile, expect = _bad(arch, tmp_path, how)
    if where == "server":
        scenario = small_scenario(server={"profile": "a100_40gb", "timing": str(profile)})
    else:
        fleet = small_scenario()["fleet"]
        fleet[1] = fleet[1] | {"timing": {"file": str(profile)}}
        scenario = small_scenario(fleet=fleet)
    path = write_scenario(scenario)
    for command in (["validate", str(path)], ["plan", str(path), "--out", str(tmp_path / "p"), "--quiet"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        assert str(profile) in err and expect in err, err
        assert ("server.timing" if where == "server" else "fleet[1].timing") in err
    assert not (tmp_path / "p").exists()


def test_threads_not_measured_are_refused(arch, tmp_path, write_scenario, capsys) -> None:
    profile = write_profile(tmp_path / "p.yaml", arch)
    path = write_scenario(small_scenario(server={"profile": "a100_40gb", "timing": {"file": str(profile),
                                                                                     "threads": 8}}))
    assert main(["validate", str(path)]) == 2
    assert "no measurements at 8 threads (measured: [2])" in capsys.readouterr().err


def test_a_relative_profile_path_is_found_beside_the_scenario(arch, tmp_path, capsys, monkeypatch) -> None:
    write_profile(tmp_path / "profiles" / "p.yaml", arch)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump(small_scenario(server={"profile": "a100_40gb", "timing": "profiles/p.yaml"})))
    monkeypatch.chdir(tmp_path.parent)  # not where the profile is
    assert main(["validate", str(scenario)]) == 0, capsys.readouterr().err


def test_a_relative_profile_path_is_read_beside_the_scenario_first(arch, tmp_path, capsys, monkeypatch) -> None:
    """`../profiles/p.yaml` in a scenario means beside the scenario, even where the working directory has a file
    at that relative place (a stray one here: not a profile at all)."""
    (tmp_path / "repo" / "scenarios").mkdir(parents=True)
    write_profile(tmp_path / "repo" / "profiles" / "p.yaml", arch)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.yaml").write_text("- not a profile\n")  # ../profiles/p.yaml seen from repo/
    scenario = tmp_path / "repo" / "scenarios" / "s.yaml"
    scenario.write_text(yaml.safe_dump(small_scenario(server={"profile": "a100_40gb",
                                                               "timing": "../profiles/p.yaml"})))
    monkeypatch.chdir(tmp_path / "repo")
    assert main(["validate", str(scenario)]) == 0, capsys.readouterr().err


def test_batches_above_the_grid_are_extrapolated_with_a_warning(arch, tmp_path, write_scenario, capsys) -> None:
    profile = write_profile(tmp_path / "p.yaml", arch)
    path = write_scenario(small_scenario(method={"name": "splitlora", "split_point": 2, "rank": 4},
                                         server={"profile": "a100_40gb", "timing": str(profile),
                                                 "batching": {"max_jobs": 4}}))
    assert main(["validate", str(path)]) == 0
    assert "server batches of up to 16 samples lie above the profile's grid (batch <= 8)" in capsys.readouterr().err


def test_the_shipped_cpu_profile_loads_and_its_scenario_validates(capsys) -> None:
    profile = load_profile(REPO / "profiles" / "minilm-l6-cpu.yaml")
    assert profile.device == "cpu" and profile.model["hidden"] == 384
    assert profile.meta["versions"]["torch"].startswith("2.13.0")
    assert main(["validate", str(REPO / "scenarios" / "minilm_sst2_profiled.yaml")]) == 0, capsys.readouterr().err


def test_meta_json_names_the_timing_source_of_the_server_and_each_fleet_entry(tmp_path, arch) -> None:
    """A profile by file and content hash; the default model by its constants."""
    import hashlib
    import json

    from hsplit_actors.planning import plan
    from hsplit_actors.scenario import parse_scenario

    measured = tmp_path / "server.yaml"
    write_profile(measured, arch)
    raw = small_scenario(server={"profile": "a100_40gb", "timing": str(measured)})
    directory, _, _ = plan(parse_scenario(yaml.safe_dump(raw)), tmp_path / "run")
    timing = json.loads((directory / "meta.json").read_text())["timing"]
    assert timing["server"]["kind"] == "profile"
    assert timing["server"]["sha256"] == hashlib.sha256(measured.read_bytes()).hexdigest()
    assert [entry["kind"] for entry in timing["fleet_entries"]] == ["roofline"] * len(raw["fleet"])
    directory, _, _ = plan(parse_scenario(yaml.safe_dump(small_scenario())), tmp_path / "default")
    server = json.loads((directory / "meta.json").read_text())["timing"]["server"]
    assert server == {"kind": "roofline", "flops": 1.95e13 * 0.75, "mem_gbps": 1555.0, "launch_us": 35.0}


def test_calibrate_records_the_spread_the_machine_shows(tmp_path, monkeypatch) -> None:
    """A timer made noisy on purpose (every other measurement twice as slow): the profile's IQR and its printed
    dispersion show the spread, instead of the 0.0 one pass's back-to-back blocks report."""
    import itertools

    from torch.utils import benchmark

    from hsplit_actors.timing.calibrate import Request, calibrate, dispersion

    real = benchmark.Timer.blocked_autorange
    slow = itertools.cycle([1.0, 2.0, 1.0])

    def noisy(self, *args, **kwargs):
        m = real(self, *args, **kwargs)
        factor = next(slow)
        return type("Noisy", (), {"median": m.median * factor, "iqr": 0.0})()

    monkeypatch.setattr(benchmark.Timer, "blocked_autorange", noisy)
    model = _tiny_model_dir(tmp_path)
    profile = calibrate(Request(str(model), seq=(8,), batch=(1, 2), ranks=(0,), threads=(1,), min_run_time=0.001,
                                blocks=1, repeats=3))
    assert profile["timer"]["repeats"] == 3
    assert dispersion(profile) > 0.2  # passes of 1x, 2x and 1x at each point
    monkeypatch.setattr(benchmark.Timer, "blocked_autorange", real)
    steady = calibrate(Request(str(model), seq=(8,), batch=(1,), ranks=(0,), threads=(1,), min_run_time=0.001,
                               blocks=1, repeats=1))
    assert dispersion(steady) == 0.0  # one pass has no spread to report: the IQR is across passes


def test_a_timing_source_is_one_object_the_engine_asks() -> None:
    """Any object with client / server / describe serves as a device's or the server's timing (timing/sources.py):
    the engine's phases and meta.json come from it alone."""
    import warnings

    from hsplit_actors.preparation import prepare
    from hsplit_actors.scenario import parse_scenario
    from hsplit_actors.simulation import simulate

    class Constant:
        def client(self, cost, config, rates):
            return 0.5, 0.25

        def server(self, cost, config, jobs):
            return 0.125 * jobs

        def describe(self):
            return {"kind": "constant"}

    scenario = parse_scenario(yaml.safe_dump(small_scenario()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setup = prepare(scenario)
    durations = setup.strategy.durations
    durations.server_source = Constant()
    durations.group_sources = [Constant() for _ in scenario.fleet]
    durations.measured_clients = True
    tables, _, extra = simulate(scenario, setup)
    ev = tables.events
    took = (ev["t_end"] - ev["t_start"]).groupby(ev["phase"].astype(str))
    for phase, seconds in (("client_fwd", 0.5), ("client_bwd", 0.25), ("server", 0.125)):
        np.testing.assert_allclose(took.get_group(phase), seconds, rtol=1e-9)
    assert extra["timing"] == {"server": {"kind": "constant"}, "fleet_entries": [{"kind": "constant"}] * 3}
