"""Load a scenario YAML into the schema; every failure becomes one line: file:line: field: what to do."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, get_args

import yaml
from pydantic import BaseModel, Tag, ValidationError

from hsplit_actors import strict_yaml
from hsplit_actors.costmodel.arch import LLAMA_LIKE, ArchError, ModelArch
from hsplit_actors.costmodel.presets import CONFIG_KEYS, PRESETS, config_key, load_config, preset_fields
from hsplit_actors.data import E2E_ATTRIBUTES, train_file, training_rows
from hsplit_actors.errors import ScenarioError
from hsplit_actors.fleet.devices import load_catalogue
from hsplit_actors.scenario.schema import METHOD_NAMES, SPLIT_METHODS, Scenario

Loc = tuple[str | int, ...]


class _Lines:
    """Maps a field path to its line in the YAML text, so errors can say where. The text is composed only when an
    error asks (composing a 140,000-entry fleet twice would double validation's time)."""

    def __init__(self, text: str | None):
        self.text = text
        self._root: Any = False

    @property
    def root(self) -> Any:
        if self._root is False:
            try:
                self._root = yaml.compose(self.text, Loader=strict_yaml.Parser) if self.text is not None else None
            except yaml.YAMLError:
                self._root = None
        return self._root

    def walk(self, loc: Loc) -> tuple[list[str | int], int | None]:
        """The part of `loc` that exists in the file, and the line of its deepest node (1-based); with no file
        (a scenario given as data), all of `loc` and no line."""
        if self.root is None:
            return list(loc), None
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


def _models_in(annotation: Any) -> list[tuple[str | None, type[BaseModel]]]:
    """The schema classes a field's annotation can hold (through lists, dicts, unions, Annotated), each with the
    tag that selects it: a form tag (`<uniform>`) or a method's name."""
    found: list[tuple[str | None, type[BaseModel]]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        name = annotation.model_fields.get("name")
        tags = get_args(name.annotation) if name is not None else ()
        return [(tags[0] if len(tags) == 1 else None, annotation)]
    tag = next((m.tag for m in getattr(annotation, "__metadata__", ()) if isinstance(m, Tag)), None)
    for arg in get_args(annotation):
        found += [(tag or inner, model) for inner, model in _models_in(arg)]
    return found


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names allowed at `loc`, pydantic's path with its union tags still in it (for 'did you mean')."""
    candidates: list[tuple[str | None, type[BaseModel]]] = [(None, model)]
    for part in loc:
        tagged = [c for c in candidates if c[0] is not None and c[0] == part]
        if tagged:  # the union member pydantic tried
            candidates = tagged
            continue
        owner = next((m for _, m in candidates if isinstance(part, str) and part in m.model_fields), None)
        if owner is not None:
            candidates = _models_in(owner.model_fields[part].annotation) or candidates
    return list(candidates[0][1].model_fields)


def _message(err: dict[str, Any], loc: Loc) -> str:
    kind, got = err["type"], err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(Scenario, tuple(err["loc"][:-1]))
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
    if kind == "form" and isinstance(got, dict):
        return f"{err['msg']} (got a mapping with keys {', '.join(map(str, got)) or 'none'})"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    text = err["msg"][0].lower() + err["msg"][1:]
    return f"{text} (got {got!r})" if got is not None and not isinstance(got, dict | list) else text


def _is_form_tag(part: str | int) -> bool:
    return isinstance(part, str) and part.startswith("<") and part.endswith(">")


def _format(exc: ValidationError, lines: _Lines, source: str) -> ScenarioError:
    errors = exc.errors()
    # Prefer errors on real keys over those about the alternatives of a union the value did not match.
    errors.sort(key=lambda e: (e["type"] in ("float_type", "model_type", "dict_type", "string_type"), 0))
    err = errors[0]
    # pydantic names the member of the `method` union it tried (`method.sfl.rank`); the file says `method.rank`
    # so do the forms of a number-or-mapping field (`<uniform>`)
    loc = tuple(p for i, p in enumerate(err["loc"])
                if not (i and err["loc"][i - 1] == "method" and p in METHOD_NAMES) and not _is_form_tag(p))
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


def _override_loc(scenario: Scenario, family: str, key: str) -> Loc:
    """Where a config field came from: `model.overrides.<key as the user spelt it>`, else `model`."""
    for given in scenario.model.overrides:
        if config_key(family, given) == key:
            return ("model", "overrides", given)
    return ("model",)


def _checked_architecture(scenario: Scenario, fail: Callable[[Loc, str], NoReturn]) -> ModelArch:
    """The architecture, with overrides checked against the family's real config: known keys, whole positive
    dimensions, heads that divide the width."""
    spec = scenario.model
    try:
        family = PRESETS[spec.preset][0] if spec.preset else getattr(load_config(spec.path), "model_type", None)
    except (OSError, ValueError) as exc:
        fail(("model", "path"), f"cannot read {spec.path}/config.json: {exc}")
    family = "llama" if family in LLAMA_LIKE else family
    known = CONFIG_KEYS.get(family)
    for key in spec.overrides:
        if known is not None and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see the family's transformers config for its keys"
            fail(("model", "overrides", key), f"a {family} config has no key {key!r}; {hint}")
    try:
        return architecture(scenario)
    except ArchError as exc:
        fail(_override_loc(scenario, family, exc.key), str(exc))
    except ValueError as exc:
        fail(("model",), str(exc))
    raise AssertionError("unreachable")


def _check_timing(scenario: Scenario, arch: ModelArch, source: str,
                  fail: Callable[[Loc, str], NoReturn]) -> Scenario:
    """Each measured profile the scenario names: readable, for this model and dtype, its grid covering the job.
    A relative path is found from the scenario's folder, else from the working directory; the scenario returned
    names the path that was found (a copy: the validated one is never changed), so plan and run read the very
    file checked here."""
    from hsplit_actors.timing.profile import ProfileError, load_profile

    base = Path(source).parent if Path(source).is_file() else None
    data = scenario.data
    owners: list[tuple[Loc, Any]] = [(("server", "timing"), scenario.server)]
    owners += [(("fleet", i, "timing"), group) for i, group in enumerate(scenario.fleet) if group.timing is not None]
    seen: dict[tuple[str, int | None], str] = {}
    moved: dict[Loc, Any] = {}
    for loc, owner in owners:
        ref = owner.timing
        if ref is None:
            continue
        file, threads = (ref, None) if isinstance(ref, str) else (ref.file, ref.threads)
        if (file, threads) not in seen:
            try:
                profile = load_profile(file, base)
                profile.check(arch, scenario.model.dtype, data.batch_size, data.seq_len, threads)
            except ProfileError as exc:
                fail(loc, str(exc))
            seen[file, threads] = profile.path
        found = seen[file, threads]
        if found != file:
            moved[loc] = found if isinstance(ref, str) else ref.model_copy(update={"file": found})
    if not moved:
        return scenario
    server = scenario.server.model_copy(update={"timing": moved.get(("server", "timing"), scenario.server.timing)})
    fleet = [g.model_copy(update={"timing": moved[("fleet", i, "timing")]}) if ("fleet", i, "timing") in moved else g
             for i, g in enumerate(scenario.fleet)]
    return scenario.model_copy(update={"server": server, "fleet": fleet})


def _check_precision(scenario: Scenario, devices: dict, servers: dict, fail: Callable[[Loc, str], NoReturn]) -> None:
    """Every catalogue device the fleet uses (where no `flops` is given) and the server compute in model.dtype."""
    dtype = scenario.model.dtype
    for group in scenario.fleet:
        names = [group.profile] if isinstance(group.profile, str) else list(group.profile.choice)
        for name in names:
            if group.flops is None and name in devices and name not in scenario.profiles:
                try:
                    devices[name].sustained(dtype)
                except ScenarioError as exc:
                    fail(("model", "dtype"), exc.message)
    if scenario.server.flops is None:
        try:
            servers[scenario.server.profile].sustained(dtype)
        except ScenarioError as exc:
            fail(("model", "dtype"), exc.message)


def _check(scenario: Scenario, lines: _Lines, source: str) -> Scenario:
    """Checks that need more than one field: names of profiles, split ranges, files on disk. Returns the scenario
    with its profile paths as found."""

    def fail(loc: Loc, message: str) -> NoReturn:
        _, line = lines.walk(loc)
        raise ScenarioError(message, field=_dotted(list(loc)), source=f"{source}:{line}" if line else source)

    devices, servers = load_catalogue()
    known = {**devices, **scenario.profiles}
    named = {g.profile for g in scenario.fleet if type(g.profile) is str}  # once per name, not per entry
    named |= {n for g in scenario.fleet if type(g.profile) is not str for n in g.profile.choice}
    if not named <= known.keys():
        for i, group in enumerate(scenario.fleet):  # the first entry with an unknown name
            for name in [group.profile] if isinstance(group.profile, str) else list(group.profile.choice):
                if name not in known:
                    close = difflib.get_close_matches(name, known, n=1)
                    hint = f"did you mean {close[0]!r}?" if close else "define it under `profiles:`"
                    fail(("fleet", i, "profile"),
                         f"unknown device {name!r}; {hint} (built-in: {', '.join(devices)})")
    if scenario.server.profile not in servers:
        fail(("server", "profile"),
             f"unknown server GPU {scenario.server.profile!r}; choose one of {', '.join(servers)}")
    _check_precision(scenario, devices, servers, fail)
    method = scenario.method
    for name in getattr(method, "per_device", {}):
        if name not in known:
            fail(("method", "per_device", name), f"unknown device {name!r}; per_device keys are device profile names")
    arch = _checked_architecture(scenario, fail)
    for target in method.targets or []:
        if target not in arch.matrices:
            fail(("method", "targets"),
                 f"{target!r} is not a matrix of a {arch.family} block; use {list(arch.matrices)}")
    scenario = _check_timing(scenario, arch, source, fail)
    layers = arch.n_layers
    if scenario.method.name in SPLIT_METHODS and layers < 2:
        fail(_override_loc(scenario, arch.family, "num_hidden_layers" if arch.family != "gpt2" else "n_layer"),
             f"{method.name} splits the model between blocks: it needs at least 2 blocks (this model has {layers})")
    if arch.task == "classification" and arch.num_labels < 2:
        fail(_override_loc(scenario, arch.family, "num_labels"),
             f"num_labels must be at least 2 for {scenario.data.dataset}'s classes (got {arch.num_labels})")
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
    data = scenario.data
    data_file = train_file(data.dataset, data.path)
    if data_file is not None and not data_file.is_file():
        loc = ("data", "path") if data.path else ("data", "dataset")
        fail(loc, f"data file {str(data_file)!r} does not exist; fix `data.path` or restore the repository's data/")
    if data_file is not None:
        rows = training_rows(data.dataset, data_file)
        if data.validation_samples >= rows:
            fail(("data", "validation_samples"), f"{data.validation_samples} leaves nothing of the {rows} samples "
                 f"of {data_file} for the clients; lower it")
        left = rows - data.validation_samples
        if data.samples_per_client > left:
            held = f" after the {data.validation_samples} held out" if data.validation_samples else ""
            fail(("data", "samples_per_client"), f"{data.samples_per_client} exceeds the {left} samples of "
                 f"{data_file}{held}; lower it to at most {left}")
    return scenario


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate YAML text into a Scenario, or raise ScenarioError with one line naming field and line."""
    try:
        raw = strict_yaml.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ScenarioError(f"not valid YAML: {getattr(exc, 'problem', exc)}", source=where) from None
    return validate_data(raw, source, text)


def validate_data(raw: Any, source: str = "<scenario>", text: str | None = None) -> Scenario:
    """Validate a scenario given as data (parsed YAML, or a scenario's dump with changes: `hsplit compare`'s
    variants); `text` is the YAML it came from, for line numbers. Schema instances inside (a validated fleet)
    are taken as they are."""
    if not isinstance(raw, dict):
        raise ScenarioError("a scenario is a YAML mapping (key: value lines)", source=source)
    lines = _Lines(text)
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise _format(exc, lines, source) from None
    return _check(scenario, lines, source)


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
