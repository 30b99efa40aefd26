"""Load a scenario YAML into the schema; every failure becomes one line: file:line: field: what to do."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hsplit_actors.costmodel.arch import ModelArch
from hsplit_actors.costmodel.presets import load_config, preset_fields
from hsplit_actors.data import E2E_ATTRIBUTES, train_file
from hsplit_actors.errors import ScenarioError
from hsplit_actors.fleet.devices import load_catalogue
from hsplit_actors.scenario.schema import METHOD_NAMES, Scenario

Loc = tuple[str | int, ...]


class _Lines:
    """Maps a field path to its line in the YAML text, so errors can say where."""

    def __init__(self, text: str):
        try:
            self.root = yaml.compose(text)
        except yaml.YAMLError:
            self.root = None

    def walk(self, loc: Loc) -> tuple[list[str | int], int | None]:
        """The part of `loc` that exists in the file, and the line of its deepest node (1-based)."""
        node, found, line = self.root, [], None
        for part in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == str(part):
                        child, line = value, key.start_mark.line + 1
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
            found.append(part)
        return found, line


def _dotted(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "scenario"


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names allowed at `loc` (best effort, for 'did you mean')."""
    fields: Any = model.model_fields
    for part in loc:
        if isinstance(part, int) or part not in fields:
            continue
        ann = fields[part].annotation
        for candidate in getattr(ann, "__args__", (ann,)):
            sub = getattr(candidate, "model_fields", None)
            if sub:
                fields = sub
                break
    return list(fields)


def _message(err: dict[str, Any], loc: Loc) -> str:
    kind, got = err["type"], err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(Scenario, loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"unknown key {key!r}; {hint}"
    if kind == "missing":
        return "required key is missing; add it"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"unknown method {ctx.get('tag')!r}; choose one of {ctx.get('expected_tags', '')}"
    if kind == "union_tag_not_found":
        return "method needs a `name`"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    text = err["msg"][0].lower() + err["msg"][1:]
    return f"{text} (got {got!r})" if got is not None and not isinstance(got, dict | list) else text


def _format(exc: ValidationError, lines: _Lines, source: str) -> ScenarioError:
    errors = exc.errors()
    # Prefer errors on real keys over those about the alternatives of a union the value did not match.
    errors.sort(key=lambda e: (e["type"] in ("float_type", "model_type", "dict_type", "string_type"), 0))
    err = errors[0]
    # pydantic names the member of the `method` union it tried (`method.sfl.rank`); the file says `method.rank`
    loc = tuple(p for i, p in enumerate(err["loc"]) if not (i and err["loc"][i - 1] == "method" and p in METHOD_NAMES))
    found, line = lines.walk(loc)
    if err["type"] in ("extra_forbidden", "missing") and len(found) < len(loc):
        found = [*found, loc[len(found)]]
    if err["type"] == "union_tag_invalid":  # point at the `name:` line
        found, line = lines.walk((*loc, "name"))
    more = f" ({len(errors) - 1} more problem(s) after fixing this)" if len(errors) > 1 else ""
    where = f"{source}:{line}" if line else source
    return ScenarioError(_message(err, loc) + more, field=_dotted(found), source=where)


def architecture(scenario: Scenario) -> ModelArch:
    """The model's shape from its preset or local config (no weights are read)."""
    spec = scenario.model
    config = preset_fields(spec.preset, spec.overrides) if spec.preset else load_config(spec.path)
    if spec.path:
        for key, value in spec.overrides.items():
            setattr(config, key, value)
    task = "classification" if scenario.data.dataset == "sst2" else None
    if scenario.data.dataset == "e2e":
        task = "causal_lm"
    return ModelArch.from_hf_config(config, task=task)


def _check(scenario: Scenario, lines: _Lines, source: str) -> None:
    """Checks that need more than one field: names of profiles, split ranges, files on disk."""

    def fail(loc: Loc, message: str) -> None:
        _, line = lines.walk(loc)
        raise ScenarioError(message, field=_dotted(list(loc)), source=f"{source}:{line}" if line else source)

    devices, servers = load_catalogue()
    known = {**devices, **scenario.profiles}
    for i, group in enumerate(scenario.fleet):
        names = [group.profile] if isinstance(group.profile, str) else list(group.profile.choice)
        for name in names:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "define it under `profiles:`"
                fail(("fleet", i, "profile"), f"unknown device {name!r}; {hint} (built-in: {', '.join(devices)})")
    if scenario.server.profile not in servers:
        fail(("server", "profile"),
             f"unknown server GPU {scenario.server.profile!r}; choose one of {', '.join(servers)}")
    method = scenario.method
    for name in getattr(method, "per_device", {}):
        if name not in known:
            fail(("method", "per_device", name), f"unknown device {name!r}; per_device keys are device profile names")
    try:
        arch = architecture(scenario)
    except (ValueError, TypeError) as exc:
        fail(("model",), str(exc))
    for target in method.targets or []:
        if target not in arch.matrices:
            fail(("method", "targets"),
                 f"{target!r} is not a matrix of a {arch.family} block; use {list(arch.matrices)}")
    layers = arch.n_layers
    split = getattr(method, "split_point", None)
    if split is not None and not 1 <= split < layers:
        fail(("method", "split_point"),
             f"must be between 1 and {layers - 1} for this {layers}-block model (got {split})")
    for name, override in getattr(method, "per_device", {}).items():
        if override.split_point is not None and not 1 <= override.split_point <= layers:
            fail(("method", "per_device", name, "split_point"),
                 f"must be between 1 and {layers} for this {layers}-block model (got {override.split_point})")
    agg = scenario.aggregation
    devices = sum(g.count for g in scenario.fleet)
    for name in ("concurrency", "buffer", "min_updates"):
        value = getattr(agg, name)
        if value is not None and value > devices:
            fail(("aggregation", name), f"{name} {value} exceeds the {devices} clients of the fleet")
    if scenario.data.seq_len > arch.max_positions:
        fail(("data", "seq_len"), f"{scenario.data.seq_len} exceeds the model's {arch.max_positions} positions")
    partition = scenario.data.partition
    if partition.kind == "dirichlet":
        keys = {"sst2": ["label"], "e2e": list(E2E_ATTRIBUTES), "synthetic": ["label"]}[scenario.data.dataset]
        if partition.by not in keys:
            fail(("data", "partition", "by"), f"cannot partition {scenario.data.dataset} by {partition.by!r}; "
                 f"use one of {', '.join(keys)}")
    data_file = train_file(scenario.data.dataset, scenario.data.path)
    if data_file is not None and not data_file.is_file():
        loc = ("data", "path") if scenario.data.path else ("data", "dataset")
        fail(loc, f"data file {str(data_file)!r} does not exist; fix `data.path` or restore the repository's data/")


class _StrictLoader(yaml.SafeLoader):
    """YAML as a scenario needs it: a key given twice is an error (YAML would let the last one win silently),
    and aliases are refused (`*name` re-uses a node: a few hundred bytes can expand a million-fold)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, f"YAML aliases (*{event.anchor}) are not accepted in a scenario; write the value out",
                event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping (first on line {seen[key]}); keep one",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate YAML text into a Scenario, or raise ScenarioError with one line naming field and line."""
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader with stricter rules
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ScenarioError(f"not valid YAML: {getattr(exc, 'problem', exc)}", source=where) from None
    if not isinstance(raw, dict):
        raise ScenarioError("a scenario is a YAML mapping (key: value lines)", source=source)
    lines = _Lines(text)
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise _format(exc, lines, source) from None
    _check(scenario, lines, source)
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    path = Path(path)
    if path.is_dir():
        raise ScenarioError(f"{str(path)!r} is a directory; give a scenario file (.yaml) inside it")
    if not path.is_file():
        raise ScenarioError(f"scenario file {str(path)!r} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"not UTF-8 text: byte {exc.start} is 0x{data[exc.start]:02x}; save the file as UTF-8",
                            source=str(path)) from None
    return parse_scenario(text, source=str(path))


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # a value used twice is written twice: scenarios refuse aliases
        return True


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False)


def dump_scenario(scenario: Scenario) -> str:
    """The resolved scenario (every default filled in), as YAML a user can re-run."""
    return dump_yaml(scenario.model_dump(mode="json"))
