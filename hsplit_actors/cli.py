"""The `hsplit` command: validate a scenario, plan it (timing only), run it (real training on Ray), or compare
methods on it."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import get_args

from hsplit_actors import workload
from hsplit_actors.errors import Interrupted, ScenarioError
from hsplit_actors.interrupts import stop_on_sigterm
from hsplit_actors.scenario.schema import EventResolution

EVENTS = get_args(EventResolution)  # `--events`: the scenario's `events:` values

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


def _progress(scenario, label: str = "client iterations"):
    """A bar over the rounds (each filled by its participants' iterations), with the virtual time and the latest
    loss and metric; the count of client iterations beside it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[steps]}"),
                        TimeElapsedColumn(), transient=True)
    task = progress.add_task("starting", total=scenario.rounds, steps="")

    def update(p) -> None:
        text = f"round {min(p.round + 1, p.rounds)}/{p.rounds}  t={p.t:,.1f}s"
        if "train_loss" in p.last:
            text += f"  loss {p.last['train_loss']:.3f}"
        if "eval_metric" in p.last:
            text += f"  {p.metric or 'metric'} {p.last['eval_metric']:.3f}"
        progress.update(task, completed=p.completed, description=text, steps=f"{p.steps:,} {label}")

    return progress, update


class _PlainProgress:
    """Without a terminal (a log file, CI): a plain line per finished round, at most one per `every_s` (the last
    always, when the command ends), so a long run is never silent."""

    def __init__(self, every_s: float = 2.0):
        self.every_s, self.said_round, self.said_at, self.latest = every_s, 0, 0.0, None

    def __call__(self, p) -> None:
        import time

        self.latest = p
        if p.round_end[0] > self.said_round and time.monotonic() - self.said_at >= self.every_s:
            self._say(p)

    def _say(self, p) -> None:
        import time

        # the latest finished round, at its own end: the clock may have moved on by the time the line is said
        done, t, steps = p.round_end
        self.said_round, self.said_at = done, time.monotonic()
        text = f"{p.label} {done}/{p.rounds or '?'}  t={t:,.1f}s  {steps:,} client iterations"
        if "train_loss" in p.last:
            text += f"  loss {p.last['train_loss']:.4f}"
        if "eval_metric" in p.last:
            text += f"  {p.metric or 'metric'} {p.last['eval_metric']:.4f}"
        print(text, file=sys.stderr, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        """The last round not said yet (rounds can end faster than a line per `every_s`), unless the command
        failed."""
        p = self.latest
        if exc[0] is None and p is not None and p.round_end[0] > self.said_round:
            self._say(p)


def _reporter(scenario, args: argparse.Namespace, label: str):
    """(context, callback) for the progress a command shows: a bar in a terminal, plain lines elsewhere,
    nothing with --quiet or `progress: false`."""
    import contextlib

    if not scenario.progress or args.quiet:
        return contextlib.nullcontext(), None
    if sys.stderr.isatty():
        return _progress(scenario, label)
    plain = _PlainProgress()
    return plain, plain


def _with_overrides(scenario, args: argparse.Namespace):
    changes = {key: value for key, value in (("seed", args.seed), ("output_dir", args.output_dir),
                                             ("events", getattr(args, "events", None))) if value is not None}
    if changes.get("seed") is not None and not 0 <= changes["seed"] < 2**63:
        raise ScenarioError(f"--seed {changes['seed']} must lie in [0, 2^63)", field="--seed")
    return scenario.model_copy(update=changes) if changes else scenario


def cmd_validate(args: argparse.Namespace) -> int:
    from hsplit_actors.api import checks
    from hsplit_actors.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        work, runs = checks(scenario, str(args.scenario))  # what `plan`, `run` and `compare` check first
    for w in caught:
        if issubclass(w.category, UserWarning) and w.category.__module__.startswith("hsplit_actors"):
            print(f"warning: {w.message}", file=sys.stderr)
    print(f"{args.scenario}: ok ({scenario.method.name}, {len(scenario.fleet)} fleet entries, "
          f"{sum(g.count for g in scenario.fleet)} devices, {scenario.rounds} rounds; `hsplit compare` would make "
          f"{runs} runs)")
    print(work.line(training=True))
    return 0


def _announce(work: workload.Workload, training: bool):
    """The work estimate on stderr, once the scenario has passed every check (`on_setup` of plan and run)."""
    return lambda _setup: print(work.line(training), file=sys.stderr, flush=True)


def cmd_plan(args: argparse.Namespace) -> int:
    from hsplit_actors.planning import plan
    from hsplit_actors.scenario import load_scenario
    from hsplit_actors.summary import render, summarise

    scenario = _with_overrides(load_scenario(args.scenario), args)
    announce = _announce(workload.check(scenario, str(args.scenario)), training=False)
    shown, update = _reporter(scenario, args, "client iterations")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with shown:
            directory, tables, extra = plan(scenario, args.out, on_progress=update, on_setup=announce)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(render(summarise(tables, extra), str(directory)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from hsplit_actors.scenario import load_scenario
    from hsplit_actors.summary import render, summarise
    from hsplit_actors.training.run import run

    if args.resume:
        from hsplit_actors.training.run import resume_state

        scenario, _ = resume_state(args.resume)
    elif args.scenario is None:
        raise ScenarioError("give a scenario file, or --resume DIR to continue an interrupted run")
    else:
        scenario = _with_overrides(load_scenario(args.scenario), args)
    if args.local:
        scenario = scenario.model_copy(update={"train": scenario.train.model_copy(update={"local": True})})
    announce = _announce(workload.check(scenario, str(args.scenario or args.resume)), training=True)
    shown, update = _reporter(scenario, args, "training steps")

    def start(setup) -> None:  # once the scenario passed every check: Ray starts, then the bar (never inside it)
        from hsplit_actors.training.run import connect

        announce(setup)
        if not scenario.train.local:
            connect(args.address or scenario.ray.address)
        shown.__enter__()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            directory, tables, extra = run(scenario, args.out, args.address, on_progress=update,
                                           resume=args.resume, on_setup=start)
        finally:
            shown.__exit__(*sys.exc_info())
    for w in caught:
        if issubclass(w.category, UserWarning) and w.category.__module__.startswith("hsplit_actors"):
            print(f"warning: {w.message}", file=sys.stderr)
    print(render(summarise(tables, extra), str(directory)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from hsplit_actors.comparison import compare
    from hsplit_actors.scenario import load_scenario

    if (args.scenario is None) == (args.resume is None):
        raise ScenarioError("give a scenario file, or --resume DIR to continue an interrupted comparison")
    scenario, more_seeds = None, None
    if args.resume is not None and args.seeds is not None:
        more_seeds = _seed_list(args.seeds)
    if args.scenario is not None:
        scenario = _with_overrides(load_scenario(args.scenario), args)
        if args.seeds is not None:
            scenario = scenario.model_copy(update={"compare": scenario.compare.model_copy(
                update={"seeds": _seed_list(args.seeds)})})
        if args.local:
            scenario = scenario.model_copy(update={"train": scenario.train.model_copy(update={"local": True})})
    show = not args.quiet and sys.stderr.isatty() and (scenario is None or scenario.progress)
    progress = task = None

    def on_run(key: str, total: int) -> None:
        nonlocal progress, task
        if not show:
            print(f"done: {key}", file=sys.stderr, flush=True)
            return
        if progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), transient=True)
            task = progress.add_task("runs", total=total)
            progress.start()
        progress.update(task, advance=1, description=f"runs (last: {key})")

    try:
        with warnings.catch_warnings():  # plan's warnings, per variant, as they come (before the runs start)
            warnings.simplefilter("default")
            warnings.showwarning = _print_warning
            directory, table = compare(scenario, args.methods, args.out, args.address, args.plan, args.resume,
                                       on_run, more_seeds)
    finally:
        if progress is not None:
            progress.stop()
    print((directory / "comparison.md").read_text())
    extra = "tuning.csv, " if (directory / "tuning.csv").is_file() else ""
    print(f"comparison: {directory}/comparison.csv, comparison.md, comparison.png, per_seed.csv, {extra}"
          "one run directory per variant and seed")
    return 0


def _print_warning(message, category, *_args, **_kwargs) -> None:
    if issubclass(category, UserWarning) and category.__module__.startswith("hsplit_actors"):
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ScenarioError(f"--seeds takes whole numbers separated by commas, got {text!r}", field="--seeds") from None
    if not seeds:
        raise ScenarioError("--seeds names no seed; give e.g. 0,1,2", field="--seeds")
    if any(not 0 <= s < 2**63 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ScenarioError(f"--seeds {text}: each seed once, each in [0, 2^63)", field="--seeds")
    return seeds


def _int_list(flag: str):
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes whole numbers separated by commas, got {text!r}") from None
        if not values or values[0] < (0 if flag == "--ranks" else 1):
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: give positive whole numbers"
                                             + (" (0 for no adapter)" if flag == "--ranks" else ""))
        return values

    return parse


def cmd_export(args: argparse.Namespace) -> int:
    from hsplit_actors.exporting import export
    from hsplit_actors.runs import is_complete

    if not is_complete(args.run_dir):
        raise ScenarioError(f"{args.run_dir} is not a finished run directory", field="RUN_DIR")
    target = export(args.run_dir, args.out, args.merged)
    kind = "merged model" if target.name == "merged" else "peft adapter"
    print(f"{target}: {kind} and tokenizer (load with transformers"
          f"{'' if kind == 'merged model' else ' + peft PeftModel.from_pretrained'})")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from hsplit_actors.timing.calibrate import Request, calibrate, dispersion, write

    ranks = args.ranks if 0 in args.ranks else (0, *args.ranks)
    if args.blocks < 1:
        raise ScenarioError("--blocks must be at least 1", field="--blocks")
    if args.repeats < 1:
        raise ScenarioError("--repeats must be at least 1", field="--repeats")
    request = Request(args.model, args.device, args.dtype, args.task, args.seq, args.batch, ranks,
                      args.threads or (), args.min_run_time, blocks=args.blocks, repeats=args.repeats)
    if not args.min_run_time > 0:
        raise ScenarioError(f"--min-run-time must be a positive number of seconds (got {args.min_run_time})",
                            field="--min-run-time")
    out = Path(args.out)
    if out.is_dir():
        raise ScenarioError(f"{out} is a folder; give the profile file to write, e.g. {out / 'profile.yaml'}",
                            field="--out")
    if out.exists() and not args.force:
        raise ScenarioError(f"{out} exists; choose another --out or pass --force to replace it", field="--out")
    folder = next((p for p in out.absolute().parents if p.exists()), None)
    if folder is not None and not os.access(folder, os.W_OK):  # found before minutes of measuring, not after
        raise ScenarioError(f"cannot write {out}: {folder} is not writable; choose another --out", field="--out")
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True,
                        disable=args.quiet)
    with progress:
        task = progress.add_task("building the model", total=None)
        profile = calibrate(request, lambda text: progress.update(task, description=text))
    try:
        write(profile, out)
    except OSError as exc:
        raise ScenarioError(f"cannot write {out}: {exc.strerror}; choose another --out", field="--out") from None
    grid = profile["grid"]
    print(f"{out}: {profile['model']['name']} ({profile['dtype']}, {profile['device']}), batch {grid['batch']} x "
          f"seq {grid['seq']}, ranks {grid['ranks']}, threads {grid['threads']}; median spread between "
          f"{args.repeats} passes (relative IQR) {100 * dispersion(profile):.1f}%")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hsplit", description="Heterogeneous split LoRA fine-tuning, simulated.")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a scenario file")
    v.add_argument("scenario", type=Path)
    v.set_defaults(func=cmd_validate)
    p = sub.add_parser("plan", help="timing-only simulation of a scenario (no training)")
    p.add_argument("scenario", type=Path)
    p.add_argument("--out", help="run directory to write (default: <output_dir>/<name>-<method>-plan-<time>)")
    p.add_argument("--output-dir", help="parent folder for run directories (overrides the scenario)")
    p.add_argument("--seed", type=int, help="override the scenario seed")
    p.add_argument("--events", choices=EVENTS,
                   help="the events table's rows: per phase, per client iteration, or none (overrides the scenario)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_plan)
    r = sub.add_parser("run", help="train for real on Ray actors, timed by the same virtual clock")
    r.add_argument("scenario", type=Path, nargs="?")
    r.add_argument("--resume", metavar="DIR", help="continue an interrupted run from its last checkpoint")
    r.add_argument("--out", help="run directory to write (default: <output_dir>/<name>-<method>-run-<time>)")
    r.add_argument("--output-dir", help="parent folder for run directories (overrides the scenario)")
    r.add_argument("--seed", type=int, help="override the scenario seed")
    r.add_argument("--events", choices=EVENTS,
                   help="the events table's rows: per phase, per client iteration, or none (overrides the scenario)")
    r.add_argument("--address", help="join a running Ray cluster (e.g. auto); default: start one locally")
    r.add_argument("--local", action="store_true", help="hosts in this process instead of Ray actors")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("compare", help="variants x seeds on the same scenario, side by side on Ray; table and plot")
    c.add_argument("scenario", type=Path, nargs="?")
    c.add_argument("--methods", help="comma-separated variants (or methods), e.g. hsplitlora,splitlora "
                   "(default: compare.variants, else compare.methods)")
    c.add_argument("--seeds", help="comma-separated seeds (overrides compare.seeds), e.g. 0,1,2; with --resume: "
                   "the seeds to end with (finished runs are kept)")
    c.add_argument("--plan", action="store_true", help="timing only: no training, any model size")
    c.add_argument("--resume", metavar="DIR", help="continue an interrupted comparison")
    c.add_argument("--out", help="directory to write (default: <output_dir>/<name>-compare-<time>)")
    c.add_argument("--output-dir", help="parent folder (overrides the scenario)")
    c.add_argument("--seed", type=int, help="override the scenario seed (the seeds default to [seed])")
    c.add_argument("--address", help="join a running Ray cluster (e.g. auto); default: start one locally")
    c.add_argument("--local", action="store_true", help="each run's hosts in its own process instead of Ray actors")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_compare)
    k = sub.add_parser("calibrate", help="measure the model's pieces on this machine and write a timing profile")
    k.add_argument("--model", required=True, help="a preset (e.g. minilm-l6, gpt2-small) or a model directory")
    k.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    k.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    k.add_argument("--task", choices=("classification", "causal_lm"),
                   help="default: classification for BERT models, causal_lm otherwise (as sst2 / e2e scenarios)")
    k.add_argument("--out", required=True, help="the profile file to write (YAML)")
    k.add_argument("--seq", type=_int_list("--seq"), default=(16, 32, 64, 128), help="sequence lengths, e.g. 16,64")
    k.add_argument("--batch", type=_int_list("--batch"), default=(1, 2, 4, 8, 16, 32), help="batch sizes")
    k.add_argument("--ranks", type=_int_list("--ranks"), default=(0, 8, 32), help="LoRA ranks (0 is always added)")
    k.add_argument("--threads", type=_int_list("--threads"), help="torch thread counts (default: 1 and all)")
    k.add_argument("--min-run-time", type=float, default=0.2, help="seconds of timed runs per point (default 0.2)")
    k.add_argument("--repeats", type=int, default=3, help="independent passes over the grid, interleaved; their "
                   "spread is the recorded IQR (default 3)")
    k.add_argument("--blocks", type=int, default=4, help="blocks built and timed in turn (default 4: a block "
                   "timed alone keeps its weights in cache, a deep model does not)")
    k.add_argument("--force", action="store_true", help="replace an existing --out")
    k.add_argument("--quiet", action="store_true", help="no progress display")
    k.set_defaults(func=cmd_calibrate)
    e = sub.add_parser("export", help="write a finished run's model as a peft adapter (or merged) directory")
    e.add_argument("run_dir", metavar="RUN_DIR", help="a finished `hsplit run` directory")
    e.add_argument("--merged", action="store_true", help="fold the adapters into the weights (save_pretrained)")
    e.add_argument("--out", help="where to write (default: RUN_DIR/model)")
    e.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    try:
        return args.func(args)
    except ScenarioError as exc:
        print(f"error: {_located(exc, args)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Interrupted, KeyboardInterrupt) as exc:
        print(str(exc) if isinstance(exc, Interrupted) else "interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        _shutdown_ray()


def _located(exc: ScenarioError, args: argparse.Namespace) -> ScenarioError:
    """An error about a scenario field found after loading (a fleet's draws, say) names the file as well."""
    path = getattr(args, "scenario", None)
    if exc.source is None and exc.field and not exc.field.startswith("-") and path:
        return ScenarioError(exc.message, field=exc.field, source=str(path))
    return exc


def _shutdown_ray() -> None:
    """No Ray process or actor this command started outlives it (also after an error or an interrupt)."""
    if "hsplit_actors.training.run" in sys.modules:  # only there is Ray ever started
        from hsplit_actors.training.run import disconnect

        disconnect()


if __name__ == "__main__":
    sys.exit(main())
