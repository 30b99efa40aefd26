"""YAML as a scenario needs it: one document of mappings, sequences and scalars, read straight from libyaml's
events. Stricter than `yaml.safe_load` where it silently misleads: a key given twice is an error (YAML lets the
last one win), aliases are refused (`*name` re-uses a node: a few hundred bytes can expand a million-fold), so are
tags other than YAML's own scalar types. And fast: no node tree is built, and repeated plain scalars are resolved
once, so a 140,000-entry fleet reads in a second or two (`safe_load` takes ten times as long).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import yaml
from yaml.constructor import ConstructorError

Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the event API of libyaml, or PyYAML's own parser
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_SCALAR_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "timestamp", "binary")}
_COLLECTION_TAGS = {None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_NO_KEY = object()


@lru_cache(maxsize=1 << 16)
def _typed(tag: str, value: str) -> Any:
    """A scalar of a known tag, as `safe_load` would build it (its own constructors)."""
    return _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, value))


@lru_cache(maxsize=1 << 16)
def _plain(value: str) -> Any:
    """An unquoted scalar: its type by YAML 1.1's implicit rules (as `safe_load`), then its value."""
    return _typed(_RESOLVER.resolve(yaml.ScalarNode, value, (True, False)), value)


def _scalar(event: yaml.ScalarEvent) -> Any:
    if event.tag is None or event.tag == "!":
        return _plain(event.value) if event.implicit[0] else event.value  # quoted (or `!`): a string
    if event.tag not in _SCALAR_TAGS:
        raise ConstructorError(None, None, f"tag {event.tag} is not accepted in a scenario; remove it",
                               event.start_mark)
    return _typed(event.tag, event.value)


def load(text: str) -> Any:
    """The one document in `text` as dicts, lists and scalars; yaml.YAMLError (with a mark) for what it refuses."""
    parser = Parser(text)
    try:
        parser.get_event()  # stream start
        if parser.check_event(yaml.StreamEndEvent):
            return None
        parser.get_event()  # document start
        value = _document(parser)
        parser.get_event()  # document end
        if not parser.check_event(yaml.StreamEndEvent):
            event = parser.get_event()
            raise yaml.composer.ComposerError(None, None, "a scenario is one YAML document; remove the second "
                                              "(after `---`)", event.start_mark)
        return value
    finally:
        parser.dispose()


def _document(parser: Any) -> Any:
    """Events to values with an explicit stack: nesting depth costs no Python recursion. (This loop is most of the
    time: event types are compared by identity, the common case, an unquoted scalar, is inlined, and a frame is
    a plain list: [container, pending key, marks of the keys seen].)"""
    stack: list[list] = []
    get_event = parser.get_event
    scalar_event, sequence_start, mapping_start = yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent
    while True:
        event = get_event()
        kind = type(event)
        if kind is scalar_event:
            value = _plain(event.value) if event.tag is None and event.implicit[0] else _scalar(event)
        elif kind is mapping_start or kind is sequence_start:
            if event.tag not in _COLLECTION_TAGS:
                raise ConstructorError(None, None, f"tag {event.tag} is not accepted in a scenario; remove it",
                                       event.start_mark)
            stack.append([{}, _NO_KEY, {}] if kind is mapping_start else [[], None, None])
            continue
        elif kind is yaml.AliasEvent:
            raise ConstructorError(None, None, f"YAML aliases (*{event.anchor}) are not accepted in a scenario; "
                                   "write the value out", event.start_mark)
        else:  # the end of a mapping or sequence
            value = stack.pop()[0]
        if not stack:
            return value
        frame = stack[-1]
        marks = frame[2]
        if marks is None:
            frame[0].append(value)
        elif frame[1] is _NO_KEY:
            if type(value) is dict or type(value) is list:
                raise ConstructorError(None, None, "a mapping or sequence cannot be a key; write a plain key",
                                       event.start_mark)
            if value in marks:
                raise ConstructorError(None, None, f"key {value!r} is given twice in one mapping (first on line "
                                       f"{marks[value].line + 1}); keep one", event.start_mark)
            marks[value] = event.start_mark
            frame[1] = value
        else:
            frame[0][frame[1]] = value
            frame[1] = _NO_KEY
