"""Fit and check the default timing model (roofline + overhead, hsplit_actors/timing/roofline.py) on measured
profiles: per machine, the utilisation of the datasheet peak and the per-kernel launch cost, fitted on half of each
profile's grid points (even batch columns) and judged on the other half (odd columns, never used in the fit), beside
the FLOPs-only model the project used before (catalogue rate, no overhead) and the catalogue's current figures.
Then MEASURED.md's 16-client H200 run: its virtual server busy time under the default model against the 1.68 s
the server actor measured.

    .venv/bin/python bench/timing_default_fit.py            # prints the tables in BENCHMARKS.md
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hsplit_actors.costmodel.arch import DTYPE_BYTES, ModelArch  # noqa: E402
from hsplit_actors.costmodel.costs import _block_pass, _head_pass  # noqa: E402
from hsplit_actors.fleet.devices import PRECISION, load_catalogue  # noqa: E402
from hsplit_actors.timing.profile import load_profile  # noqa: E402
from hsplit_actors.timing.roofline import Rates, seconds  # noqa: E402

# machine -> (profiles, the catalogue entry whose peaks it has, FLOP/s the pre-issue-21 catalogue charged)
MACHINES = {
    "H200 (CUDA)": (["profiles/minilm-l6-h200-fp32.yaml", "profiles/gpt2-small-4blocks-h200-fp32.yaml",
                     "profiles/llama2-7b-h200-bf16.yaml"], "h200_141gb", 4.0e14),
    # this project's 2-core AMD EPYC (Zen, AVX2: 2 x 256-bit FMA = 32 FP32 FLOP per cycle) at ~2.45 GHz, 1 thread
    "CPU (1 core)": (["profiles/minilm-l6-cpu.yaml", "profiles/gpt2-small-cpu.yaml"], None, None),
}
CPU_PEAK = 32 * 2.45e9  # FP32 FLOP/s of one core
CPU_MEM_GBPS = 20.0


def arch_of(profile) -> ModelArch:
    m = profile.model
    return ModelArch(family=m["family"], n_layers=4, hidden=m["hidden"], n_heads=m["n_heads"],
                     n_kv_heads=m["n_kv_heads"], head_dim=m["head_dim"], ffn=m["ffn"], vocab=m["vocab"],
                     max_positions=4096, task=m["task"], num_labels=m.get("num_labels") or 2)


def points(profile):
    """(piece, rank, batch, seq, measured s, held_out) for every block and head piece of the profile (the CPU's at
    one thread)."""
    threads = profile.default_threads if profile.device == "cuda" else min(profile.threads)
    tables = profile.tables[threads]
    pieces = [*itertools.product(("block_fwd", "block_fwdbwd", "block_fwdbwd_noinput"), profile.ranks),
              ("head_fwd", 0), ("head_fwdbwd", 0)]
    for name, r in pieces:
        grid = tables[f"{name}_r{r}" if name.startswith("block") else name]
        for (i, seq), (j, batch) in itertools.product(enumerate(grid.seq), enumerate(grid.batch)):
            yield name, r, batch, seq, float(grid.median[i, j]), j % 2 == 1


def work(arch: ModelArch, profile, name: str, r: int, batch: int, seq: int) -> tuple[float, float, float]:
    """FLOPs, bytes and kernels of one piece, counted as the default model counts them."""
    ab = DTYPE_BYTES[profile.dtype]
    if name.startswith("head"):
        h = _head_pass(arch, batch, seq, True)
        head_bytes = h.weights * ab + 2 * h.saved * ab
        return ((h.fwd, head_bytes, h.fwd_kernels) if name == "head_fwd"
                else (h.fwd + h.bwd, 2 * head_bytes, h.fwd_kernels + h.bwd_kernels))
    ranks = tuple(r if m in profile.adapter_matrices else 0 for m in arch.matrices)
    p = _block_pass(arch, ranks, batch, seq, name == "block_fwdbwd", arch.family in ("gpt2", "bert"))
    fwd_bytes = p.weights * ab + 2 * p.saved * ab
    if name == "block_fwd":
        return p.fwd, fwd_bytes, p.fwd_kernels
    return p.fwd + p.bwd, 2 * fwd_bytes, p.fwd_kernels + p.bwd_kernels


def errors(rows, rates_of) -> np.ndarray:
    return np.array([abs(seconds(f, b, k, rates_of(prec)) - t) / t for f, b, k, t, prec in rows])


def fit(rows, peak_of, mem_gbps: float) -> tuple[dict[str, float], float]:
    """Utilisation per precision and one launch cost: least squares on log(time), by grid search."""
    best = (np.inf, None, None)
    precisions = sorted({prec for *_, prec in rows})
    for launch_us in np.geomspace(1, 300, 121):
        util = {}
        for prec in precisions:  # each precision's utilisation, given the launch cost
            sub = [row for row in rows if row[4] == prec]
            util[prec] = min(np.geomspace(0.005, 1.0, 121), key=lambda u, sub=sub: np.sum(np.log(
                [seconds(f, b, k, Rates.of(u * peak_of(prec), mem_gbps, launch_us)) / t for f, b, k, t, _ in sub])
                ** 2))
        loss = np.sum(np.log([seconds(f, b, k, Rates.of(util[p] * peak_of(p), mem_gbps, launch_us)) / t
                              for f, b, k, t, p in rows]) ** 2)
        if loss < best[0]:
            best = (loss, util, launch_us)
    return best[1], best[2]


def check_machine(machine: str, files: list[str], entry: str | None, old_rate: float | None) -> tuple:
    """Fit one machine's constants on its profiles' training points; print each profile's held-out errors."""
    _, servers = load_catalogue()
    server = servers[entry] if entry else None

    def peak_of(prec: str) -> float:
        return server.peak[prec] if server else CPU_PEAK

    mem = server.mem_gbps if server else CPU_MEM_GBPS
    per_profile = {}
    for path in files:
        profile = load_profile(REPO / path)
        arch, prec = arch_of(profile), PRECISION[profile.dtype]
        per_profile[path] = [(*work(arch, profile, n, r, b, s), t, prec, held)
                             for n, r, b, s, t, held in points(profile)]
    util, launch_us = fit([row[:5] for rows in per_profile.values() for row in rows if not row[5]], peak_of, mem)

    def fitted(prec: str) -> Rates:
        return Rates.of(util[prec] * peak_of(prec), mem, launch_us)

    def flops_only(prec: str) -> Rates:  # the model before issue 21: one catalogue rate, no overhead
        return Rates.of(old_rate or 0.3 * CPU_PEAK, 1e9, 0.0)

    def catalogue(prec: str) -> Rates:
        dtype = next(d for d, p in PRECISION.items() if p == prec)
        return Rates.of(server.sustained(dtype), server.mem_gbps, server.launch_us)

    for path, rows in per_profile.items():
        held = [row[:5] for row in rows if row[5]]
        before, after = errors(held, flops_only), errors(held, fitted)
        if server:
            cat = errors(held, catalogue)
            cat_text = f"{100 * np.median(cat):.1f}% / {100 * cat.max():.1f}%"
        else:
            cat_text = "(no catalogue entry: this machine)"
        print(f"| {machine} | `{Path(path).name}` | {len(rows) - len(held)} / {len(held)} | "
              f"{100 * np.median(before):.1f}% / {100 * before.max():.1f}% | "
              f"{100 * np.median(after):.1f}% / {100 * after.max():.1f}% | {cat_text} |")
    return util, launch_us


def main() -> None:
    print("| machine | profile | points fit / held out | FLOPs model (before) median / worst | default, fitted "
          "median / worst | default, catalogue median / worst |")
    print("|---|---|---|---|---|---|")
    fitted = {machine: check_machine(machine, *spec) for machine, spec in MACHINES.items()}
    print()
    for machine, (util, launch_us) in fitted.items():
        shown = ", ".join(f"{p} {u:.3f}" for p, u in util.items())
        print(f"{machine}: utilisation of peak {shown}; launch {launch_us:.1f} us per kernel")
    phase_check()
    run_check()


def phase_check() -> None:
    """Whole phases on the H200 (MEASURED.md's fidelity points: batch, seq, split and rank patterns off every grid,
    timed for real): measured against the profile's prediction and the default model's, same points."""
    import csv

    from hsplit_actors.costmodel import ClientConfig
    from hsplit_actors.costmodel.costs import iteration_cost
    from hsplit_actors.costmodel.presets import build_config
    from hsplit_actors.fleet.devices import load_catalogue
    from hsplit_actors.timing.sources import Roofline

    _, servers = load_catalogue()
    h200 = servers["h200_141gb"]
    rates = Rates.of(h200.sustained("float32"), h200.mem_gbps, h200.launch_us)
    model = Roofline(rates)
    print("\n| model (H200, fp32) | phase points | profile median / worst | default model median / worst | "
          "measured pass-to-pass spread (median) |")
    print("|---|---|---|---|---|")
    for name, overrides, task in (("minilm-l6", {"num_labels": 2}, "classification"),
                                  ("gpt2-small", {"n_layer": 4}, "causal_lm")):
        arch = ModelArch.from_hf_config(build_config(name, overrides), task=task)
        rows = list(csv.DictReader((REPO / "profiles" / "h200-runs" / f"fidelity-{name}-h200.csv").open()))
        prof, dflt, spread = [], [], []
        for row in rows:
            ranks = dict(pair.split(":") for pair in row["ranks"].split(","))
            rank_rows = tuple(tuple(int(ranks.get(m, 0)) for m in arch.matrices) for _ in range(arch.n_layers))
            config = ClientConfig(int(row["split"]), rank_rows)
            cost = iteration_cost(arch, config, int(row["batch"]), int(row["seq"]), "float32")
            fwd, bwd = model.client(cost, config, rates)
            predicted = {"client_fwd": fwd, "client_bwd": bwd, "server": model.server(cost, config, 1)}[row["phase"]]
            measured = float(row["measured_ms"]) / 1e3
            prof.append(abs(float(row["profile_err_%"])) / 100)
            dflt.append(abs(predicted - measured) / measured)
            spread.append(float(row["spread_%"]) / 100)
        prof, dflt = np.array(prof), np.array(dflt)
        print(f"| {name} | {len(rows)} | {100 * np.median(prof):.1f}% / {100 * prof.max():.1f}% | "
              f"{100 * np.median(dflt):.1f}% / {100 * dflt.max():.1f}% | {100 * np.median(spread):.0f}% |")


def run_check() -> None:
    """MEASURED.md's splitlora_ray run (16 clients, GPT-2 small shape, fp32, server h100_80gb, batches of 8):
    the virtual server busy time the default model gives, against the server actor's measured 1.68 s."""
    from hsplit_actors.preparation import prepare
    from hsplit_actors.scenario import load_scenario
    from hsplit_actors.simulation import simulate

    scenario = load_scenario(REPO / "profiles" / "h200-runs" / "splitlora_ray" / "scenario.yaml")
    _, _, extra = simulate(scenario, prepare(scenario))
    print(f"\nMEASURED.md's 16-client SplitLoRA run: virtual server busy {extra['server_busy_s']:.3f} s under the "
          f"default model (before: 0.092 s), measured 1.68 s: ratio {1.68 / extra['server_busy_s']:.2f}x")


if __name__ == "__main__":
    main()
