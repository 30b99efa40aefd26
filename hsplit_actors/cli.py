"""The `hsplit` command: validate and plan (run and compare come with the training path)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from hsplit_actors.errors import ScenarioError

EXIT_BAD_INPUT = 2


def _progress(scenario, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("client-iterations"), TimeElapsedColumn(), transient=True)
    task = progress.add_task("plan", total=total)

    def update(done: int, rnd: int, now: float) -> None:
        progress.update(task, completed=done, description=f"round {rnd + 1}/{scenario.rounds}  t={now:,.1f}s")

    return progress, update


def cmd_validate(args: argparse.Namespace) -> int:
    from hsplit_actors.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    print(f"{args.scenario}: ok ({scenario.method.name}, {len(scenario.fleet)} fleet entries, "
          f"{sum(g.count for g in scenario.fleet)} devices, {scenario.rounds} rounds)")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from hsplit_actors.plan import plan
    from hsplit_actors.scenario import load_scenario
    from hsplit_actors.summary import render, summarise

    scenario = load_scenario(args.scenario)
    if args.seed is not None:
        scenario = scenario.model_copy(update={"seed": args.seed})
    if args.output_dir:
        scenario = scenario.model_copy(update={"output_dir": args.output_dir})
    total = sum(g.count for g in scenario.fleet) * scenario.rounds * scenario.local_iterations
    show = scenario.progress and not args.quiet and sys.stderr.isatty()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if show:
            progress, update = _progress(scenario, total)
            with progress:
                directory, tables, extra = plan(scenario, args.out, on_progress=update)
        else:
            directory, tables, extra = plan(scenario, args.out)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(render(summarise(tables, extra), str(directory)))
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
