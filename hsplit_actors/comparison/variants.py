"""What a comparison runs: variants (a method with overrides), each under every seed, after an optional tuning
stage on a validation split. Every setting is checked here, before anything starts."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from hsplit_actors.errors import ScenarioError
from hsplit_actors.scenario.load import validate_data
from hsplit_actors.scenario.schema import METHOD_NAMES, METHOD_SPECS, Scenario
from hsplit_actors.workload import check

# a variant may change these besides its method; `train` (the recipe: schedule, weight decay, ...) and `data`
# (e.g. its partition) are merged key by key into the scenario's own sections
SCENARIO_KEYS = ("aggregation", "rounds", "local_iterations", "train", "data")
MERGED_KEYS = ("train", "data")
VARIANT_KEYS = ("method", "tune", *SCENARIO_KEYS)


@dataclass(frozen=True)
class Job:
    """One run of a comparison: its directory (relative to the comparison's), and the scenario it runs."""

    key: str
    variant: str
    seed: int
    stage: str  # "tune" or "final"
    point: dict[str, Any] = field(default_factory=dict)  # the tuned settings it runs with
    scenario: Scenario | None = None


def _settings_of(method: str) -> set[str]:
    spec = METHOD_SPECS[METHOD_NAMES.index(method)]  # METHOD_NAMES is read off METHOD_SPECS, in order
    return set(spec.model_fields) - {"name"}


def raw_variants(scenario: Scenario) -> dict[str, dict[str, Any]]:
    """`compare.variants`, or one variant per `compare.methods` entry with `per_method[name]` as overrides."""
    spec = scenario.compare
    if spec.variants is not None:
        if not spec.variants:
            raise ScenarioError("compare.variants is empty; name at least one variant", field="compare.variants")
        return {name: dict(v or {}) for name, v in spec.variants.items()}
    return {m: {"method": m, **spec.per_method.get(m, {})} for m in spec.methods}


def select(scenario: Scenario, names: str | None) -> dict[str, dict[str, Any]]:
    """The variants to run: all, or those named on the command line (`--methods a,b`)."""
    variants = raw_variants(scenario)
    if not names:
        return variants
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise ScenarioError("--methods names no variant", field="--methods")
    choices = list(variants) if scenario.compare.variants is not None else list(METHOD_NAMES)
    unknown = [n for n in wanted if n not in choices]
    if unknown:
        what = "variant" if scenario.compare.variants is not None else "method"
        raise ScenarioError(f"unknown {what} {unknown[0]!r}; choose from {', '.join(choices)}", field="--methods")
    per_method = scenario.compare.per_method
    return {n: variants.get(n, {"method": n, **per_method.get(n, {})}) for n in wanted}


def _where(name: str, scenario: Scenario) -> str:
    return f"compare.variants.{name}" if scenario.compare.variants is not None else f"compare.per_method.{name}"


def resolve(scenario: Scenario, name: str, raw: dict[str, Any], point: dict[str, Any] | None = None) -> Scenario:
    """The scenario a variant runs: its method (the scenario's own `method:` settings when it names the same
    method, otherwise the method's defaults) with the variant's overrides, then `point` (tuned settings)."""
    where = _where(name, scenario)
    method = raw.get("method", name if scenario.compare.variants is None else None)
    if method is None:
        raise ScenarioError(f"variant {name!r} names no method; add `method:` (one of {', '.join(METHOD_NAMES)})",
                            field=where)
    if method not in METHOD_NAMES:
        raise ScenarioError(f"unknown method {method!r}; choose from {', '.join(METHOD_NAMES)}",
                            field=f"{where}.method")
    settings = _settings_of(method)
    unknown = [k for k in raw if k not in VARIANT_KEYS and k not in settings]
    if unknown:
        raise ScenarioError(f"unknown key {unknown[0]!r} in variant {name!r}; a variant takes "
                            f"{', '.join(VARIANT_KEYS)} or {method}'s settings ({', '.join(sorted(settings))})",
                            field=f"{where}.{unknown[0]}")
    base = scenario.method.model_dump(mode="json") if scenario.method.name == method else {"name": method}
    overrides = {k: v for k, v in raw.items() if k in settings} | (point or {})
    update: dict[str, Any] = {"method": base | overrides | {"name": method}}
    data = scenario.model_dump(mode="json", exclude={"fleet"}) | {"fleet": list(scenario.fleet)}
    for key in SCENARIO_KEYS:
        if key in raw:
            merge = key in MERGED_KEYS and isinstance(raw[key], dict)
            update[key] = data[key] | raw[key] if merge else raw[key]
    # the whole scenario again, through every check a scenario file gets (the method's settings, aggregation
    # against the fleet, ...); its errors are named under the variant
    # (the fleet, which no variant changes, is passed as the validated groups it is: a 140,000-entry fleet
    # re-validated per variant would cost seconds each)
    data |= update
    try:
        resolved = validate_data(data, source=f"variant {name!r}")
        check(resolved)  # its rounds or aggregations may make tables this machine cannot hold
        return resolved
    except ScenarioError as exc:
        inner = f"{exc.field}: " if exc.field else ""
        raise ScenarioError(inner + exc.message, field=where) from None


def grid_of(scenario: Scenario, name: str, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The tuning points of a variant: its own `tune:`, else `compare.tune`; every setting must be its method's."""
    grid = raw.get("tune", scenario.compare.tune) or {}
    where = f"{_where(name, scenario)}.tune" if "tune" in raw else "compare.tune"
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ScenarioError("a tuning grid maps each setting to a non-empty list of candidates, e.g. "
                            "{lr: [0.001, 0.003]}", field=where)
    method = raw.get("method", name)
    settings = _settings_of(method) if method in METHOD_NAMES else set()
    for key in grid:
        if key not in settings:
            raise ScenarioError(f"variant {name!r} ({method}) has no setting {key!r} to tune; its settings are "
                                f"{', '.join(sorted(settings))}", field=f"{where}.{key}")
        if key in raw:
            raise ScenarioError(f"variant {name!r} fixes {key} and tunes it; remove one of the two",
                                field=f"{where}.{key}")
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def point_label(point: dict[str, Any]) -> str:
    """A directory-safe name for a tuning point, e.g. `lr=0.001,rank=8`."""
    return ",".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in point.items()).replace("/", "_") or "-"


def seeds_of(scenario: Scenario) -> list[int]:
    return list(scenario.compare.seeds or [scenario.seed])


def with_seed(scenario: Scenario, seed: int, **train_or_data) -> Scenario:
    """The same scenario under another seed (fleet sampling, partition, initialisation and data order)."""
    update: dict[str, Any] = {"seed": seed}
    if "validation_samples" in train_or_data:
        update["data"] = scenario.data.model_copy(update={"validation_samples": train_or_data["validation_samples"]})
    train = {k: v for k, v in train_or_data.items() if k in ("evaluate_on", "export")}
    if train:
        update["train"] = scenario.train.model_copy(update=train)
    return scenario.model_copy(update=update)


def check_all(scenario: Scenario) -> int:
    """Every variant at every tuning point, checked as a comparison would check it; returns how many runs a
    comparison of this scenario makes."""
    variants = raw_variants(scenario)
    seeds = seeds_of(scenario)
    runs = 0
    for name, raw in variants.items():
        grid = grid_of(scenario, name, raw)
        for point in grid:
            resolve(scenario, name, raw, point)
        if any(grid):
            runs += len(grid) * len(scenario.compare.tune_seeds or seeds)
        runs += len(seeds)
    return runs
