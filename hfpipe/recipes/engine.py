"""A typed-YAML engine: dataclasses as the schema, one-line errors for every problem of a document.

Nothing here knows hfpipe's recipe. A schema is a tree of dataclasses whose fields carry their type
(bool, int, float, str, Literal, list, dict, Optional, unions, nested dataclasses, ``Any`` for
free-form YAML) and, through :func:`checked`, a numeric :class:`Range`. A union of dataclasses that
all have one field as a ``Literal`` of their own values is a tagged union (:func:`tagged`): the tag's
value picks the dataclass, and a key of another member is refused as having no effect; a :class:`Registry`
is such a union open to plug-ins (``Annotated[Base, registry]``: its members are registered at import,
not listed in the schema). :func:`build` turns a parsed
mapping into the root dataclass; every problem is one :class:`hfpipe.errors.InputError` line
``<where>: <dotted.key>: <what was expected>``, with the closest valid key or value named.

Also: :func:`read_yaml` (refuses a key written twice), :func:`parse_set` and :func:`apply_override`
(``--set dotted.key=value``), :func:`flatten` (nested or dotted overrides to dotted keys).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import types
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from hfpipe.errors import InputError


@dataclass(frozen=True)
class Range:
    """A numeric bound kept in a field's metadata; checked after types are coerced."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __call__(self, v: float) -> bool:
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.high_open else v > self.high))

    def describe(self) -> str:
        if self.high is None:
            return f"a number {'>' if self.low_open else '>='} {self.low:g}"
        return f"a number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
PROBABILITY = Range(0, 1)
HALF_OPEN_UNIT = Range(0, 1, high_open=True)
OPEN_UNIT = Range(0, 1, low_open=True, high_open=True)


def checked(default: Any = dataclasses.MISSING, check: Range | None = None, **kwargs: Any) -> Any:
    """``dataclasses.field`` with a range checked on load (on each element for lists; None skipped)."""
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    return field(metadata={"check": check}, **kwargs)


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a typed document must not."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in seen:
                raise _DuplicateKey(f"line {line}: key {show(key)} appears twice (lines {seen[key]} and {line}); "
                                    "YAML would keep only the last one")
            if isinstance(key, Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, what: str = "file", contents: str = "a mapping") -> dict[str, Any]:
    """A YAML mapping read from ``path``; every problem (missing, not UTF-8, invalid, a key twice) is one InputError."""
    if not path.is_file():
        raise InputError(f"{path}: no such {what}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except _DuplicateKey as e:
        raise InputError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise InputError(f"{path}: {line}{problem}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected {contents}, got {show(data)}")
    return data


def parse_set(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set {item}: expected dotted.key=value, e.g. train.learning_rate=3e-5")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise InputError(f"--set {item}: the value is not valid YAML (quote it)") from None
    return key.strip(), value



def flatten(root: type, overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"max_steps": 5}} or {"train.max_steps": 5} -> {"train.max_steps": 5}; stops at non-sections."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and is_section(root, dotted):
            flat.update(flatten(root, value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def is_section(root: type, dotted: str) -> bool:
    try:
        hint = hint_for(root, dotted, "")
    except InputError:
        return False
    return bool(sections_of(hint))


def hint_for(root: type, dotted: str, where: str) -> Any:
    """The type of a dotted key of dataclass ``root`` (unknown keys raise the same error as in a file);
    dict keys pass through."""
    hint: Any = root
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        inner = strip_optional(hint)
        prefix = ".".join(parts[:i])
        if sections_of(hint):
            types_ = field_types(sections_of(hint))
            if part not in types_:
                raise unknown_key(sections_of(hint), part, prefix + "." if prefix else "", where)
            tag = tagged(hint)
            hint = Literal[tuple(tag[1])] if tag and part == tag[0] else types_[part]  # any member's tag
        elif get_origin(inner) is dict:
            hint = get_args(inner)[1]
        elif inner is Any:
            hint = Any
        else:
            raise InputError(f"{where}: {dotted}: {prefix} is a single value, not a section")
    return hint


def apply_override(root: type, raw: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """Set ``dotted`` in the raw nested dict (a future ``root``) after checking the key and the value's type."""
    hint = hint_for(root, dotted, where)
    section = bool(sections_of(hint))
    if not section:  # report a bad value against its origin (--set, --smoke), not the file
        coerce(value, hint, dotted, where)
    node = raw
    *parents, last = dotted.split(".")
    for i, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise InputError(f"{where}: {'.'.join(parents[: i + 1])}: expected a mapping, got {show(child)}")
        node = child
    if section and isinstance(value, Mapping) and isinstance(node.get(last), dict):
        for key, sub in value.items():  # a mapping given for a section updates it key by key
            apply_override(root, raw, f"{dotted}.{key}", sub, where)
    else:
        node[last] = copy.deepcopy(value)


# ---------------------------------------------------------------------------- open tagged unions
class Registry(Mapping):
    """A tagged union whose members register themselves: ``field: Annotated[Base, registry]`` in a schema
    is the union of the dataclasses registered so far (subclasses of ``Base``, each with ``<tag>:
    Literal["<value>"]``), and the registry maps each tag value to its member.

    ``noun`` names the members in the message for an unknown tag ("unknown task 'x'; known: ...").
    ``keeps_defaults``: another member's key is dropped, not refused, while it holds that member's
    default: documents written when the members were one flat section (every key at its default) still
    load, and a key the user set for another member is still refused."""

    def __init__(self, base: type, tag: str, noun: str | None = None, keeps_defaults: bool = False):
        self.base, self.tag, self._members = base, tag, {}
        self.noun, self.keeps_defaults = noun, keeps_defaults
        _REGISTRIES.append(self)

    def register(self, member: type) -> type:
        """Add ``member`` (usable as a class decorator); a tag value registered twice is refused."""
        if not (dataclasses.is_dataclass(member) and issubclass(member, self.base)):
            raise TypeError(f"{member.__name__}: a {self.base.__name__} dataclass is expected")
        values = get_args(get_type_hints(member).get(self.tag))
        taken = [value for value in values if value in self._members and self._members[value] is not member]
        if not values or taken:
            raise ValueError(f"{member.__name__}.{self.tag}: needs a Literal of values not registered yet, got {values}")
        self._members.update(dict.fromkeys(values, member))
        _forget_hints()
        return member

    def unregister(self, member: type) -> None:
        for value in [value for value, m in self._members.items() if m is member]:
            del self._members[value]
        _forget_hints()

    def union(self) -> Any:
        members = tuple(dict.fromkeys(self._members.values()))
        return Union[members] if members else self.base  # noqa: UP007 (a runtime union of classes)

    def __getitem__(self, value: Any) -> type:
        return self._members[value]

    def __iter__(self):
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    # one registry is one union: identity, so that Annotated[Base, registry] can be hashed
    __eq__, __hash__ = object.__eq__, object.__hash__


_REGISTRIES: list[Registry] = []


def _registry_of(members: Iterable[type]) -> Registry | None:
    """The registry whose union ``members`` are (None for a union written out in the schema)."""
    members = tuple(members)
    return next((r for r in _REGISTRIES if members and all(issubclass(m, r.base) for m in members)), None)


def _default_of(member: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(member) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _resolve(hint: Any) -> Any:
    """``hint`` with every ``Annotated[Base, registry]`` replaced by the registry's union now."""
    if get_origin(hint) is Annotated:
        registries = [m for m in hint.__metadata__ if isinstance(m, Registry)]
        return registries[0].union() if registries else _resolve(get_args(hint)[0])
    if get_origin(hint) in (Union, types.UnionType):
        return Union[tuple(_resolve(a) for a in get_args(hint))]  # noqa: UP007
    return hint


def _forget_hints() -> None:
    hints.cache_clear()
    tagged.cache_clear()


# ---------------------------------------------------------------------------- generic validator
@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """The types of a dataclass's fields (class variables are not keys), registries resolved."""
    every = get_type_hints(cls, include_extras=True)
    return {f.name: _resolve(every[f.name]) for f in dataclasses.fields(cls)}


def field_types(classes: Iterable[type]) -> dict[str, Any]:
    """The fields of one or more dataclasses (the members of a tagged union) and their types."""
    types_: dict[str, Any] = {}
    for cls in classes:
        types_ = {**hints(cls), **types_}
    return types_


@functools.cache
def tagged(hint: Any) -> tuple[str, dict[Any, type]] | None:
    """``(tag, {value: member})`` when ``hint`` is a union of dataclasses told apart by a field they all
    have as a ``Literal`` of their own values (``name: Literal["clm"]``, ...); else None."""
    members = [a for a in get_args(hint) if a is not type(None)] if get_origin(hint) in (Union, types.UnionType) else []
    if len(members) < 2 or not all(dataclasses.is_dataclass(m) for m in members):
        return None
    for tag in hints(members[0]):
        values = [get_args(hints(m).get(tag)) if get_origin(hints(m).get(tag)) is Literal else () for m in members]
        choices = {v: m for m, vs in zip(members, values) for v in vs}
        if all(values) and len(choices) == sum(map(len, values)):
            return tag, choices
    return None


def sections_of(hint: Any) -> tuple[type, ...]:
    """The dataclasses a value of ``hint`` is built as: one (a section, maybe optional), the members
    of a tagged union, or none (a single value)."""
    inner = strip_optional(hint)
    if dataclasses.is_dataclass(inner):
        return (inner,)
    tag = tagged(hint)
    return tuple(dict.fromkeys(tag[1].values())) if tag else ()


def strip_optional(hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, cut to one short line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def key_text(key: Any) -> str:
    """A mapping key for a message: as written when it is a plain string, else its repr (one line)."""
    return key if isinstance(key, str) and key.isprintable() else repr(key)


def describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        return f"a list of {describe(args[0]).split(' ', 1)[-1]}s" if args[0] is not Any else "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "a mapping"
    return {bool: "a boolean (true/false)", int: "an integer", float: "a float", str: "a string"}.get(hint, "a value")


def closest(word: Any, choices: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    guess = closest(word, choices)
    return f" (did you mean '{guess}'?)" if guess else ""


def unknown_key(classes: tuple[type, ...], key: Any, prefix: str, where: str) -> InputError:
    """The error for ``key``, a field of none of ``classes``, naming the closest valid key."""
    types_ = field_types(classes)
    valid = list(types_)
    guess = closest(key, valid)
    suggestion = f"{prefix}{guess}" if guess else None
    if guess is None and not prefix:
        # A section's key written at the top level: point at its real home.
        for section in valid:
            if key in field_types(sections_of(types_[section])):
                suggestion = f"{section}.{key}"
                break
    hint = f"did you mean '{suggestion}'?" if suggestion else "valid keys: " + ", ".join(valid)
    return InputError(f"{where}: {prefix}{key_text(key)}: unknown key ({hint})")


def build(cls: type, raw: Any, prefix: str, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys, types and ranges field by field."""
    section = prefix[:-1] or cls.__name__.lower()
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: {section}: expected a mapping, got {show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise unknown_key((cls,), key, prefix, where)
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name in raw:
            kwargs[name] = value = coerce(raw[name], hints(cls)[name], key, where)
            check = f.metadata.get("check")
            values = value if isinstance(value, list) else [value]
            for v in values:
                if check is not None and v is not None and not check(v):
                    raise InputError(f"{where}: {key}: expected {check.describe()}, got {show(v)}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            hint = hints(cls)[name]
            what = "section" if dataclasses.is_dataclass(hint) else f"key ({describe(hint)})"
            raise InputError(f"{where}: {key}: missing required {what}")
    return cls(**kwargs)


def coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """``value`` converted to ``hint`` (YAML scalars are forgiving: 2 -> 2.0, "1e-4" -> 1e-4)."""

    def fail(extra: str = "") -> InputError:
        return InputError(f"{where}: {key}: expected {describe(hint)}, got {show(value)}{extra}")

    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        check_plain(value, key, where)
        return copy.deepcopy(value)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise fail()
        if tagged(hint):
            return _build_tagged(hint, value, key, where)
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:  # Optional[X]: X's own, more precise, messages
            return coerce(value, members[0], key, where)
        # Members of the value's own type first, so "all-linear" stays a str in list[str] | str.
        members.sort(key=lambda a: not _is_instance(value, a))
        for member in members:
            try:
                return coerce(value, member, key, where)
            except InputError:
                continue
        raise fail()
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key + ".", where)
    if origin is Literal:
        if value is False and "no" in args:  # YAML 1.1 reads a bare `no` as false
            return "no"
        if isinstance(value, str) and value in args:
            return value
        raise fail(did_you_mean(value, args) if isinstance(value, str) else "")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise fail()
        return [coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail()
        return {coerce(k, args[0], key, where): coerce(v, args[1], f"{key}.{key_text(k)}", where)
                for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):  # e.g. a numeric revision
            return str(value)
        raise fail()
    if hint in (int, float):
        number = _to_number(value)
        if number is None or (hint is int and not float(number).is_integer()):
            raise fail()
        return int(number) if hint is int else float(number)
    raise TypeError(f"engine: no coercion for type {hint!r} at {key}")  # a schema bug, not user input


def _build_tagged(hint: Any, raw: Any, key: str, where: str) -> Any:
    """The member of a tagged union that the mapping's tag names; a key of another member is refused
    (it would do nothing for the member chosen)."""
    tag, choices = tagged(hint)
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: {key}: expected a mapping, got {show(raw)}")
    members, tags = sections_of(hint), Literal[tuple(choices)]
    registry = _registry_of(members)
    every_key = field_types(members)
    value = raw.get(tag)
    if not (isinstance(value, Hashable) and value in choices):  # unknown keys first, then the tag's own message
        for name in raw:
            if name not in every_key:
                raise unknown_key(members, name, key + ".", where)
        if tag not in raw:
            raise InputError(f"{where}: {key}.{tag}: missing required key ({describe(tags)})")
        if registry is not None and registry.noun and isinstance(value, str):
            raise InputError(f"{where}: {key}.{tag}: unknown {registry.noun} {show(value)}"
                             f"{did_you_mean(value, choices)}; known: " + ", ".join(map(str, choices)))
        value = coerce(value, tags, f"{key}.{tag}", where)  # raises "expected one of ...", or reads YAML's `no`
    chosen = choices[value]
    options = [f.name for f in dataclasses.fields(chosen)]
    kept = {}
    for name in raw:
        if name in options:
            kept[name] = raw[name]
            continue
        if name not in every_key:  # the closest of the chosen member's keys, else of any member's
            near = closest(name, options) or not closest(name, every_key)
            raise unknown_key((chosen,) if near else members, name, key + ".", where)
        owners = [m for m in members if name in hints(m)]
        if registry is not None and registry.keeps_defaults and any(raw[name] == _default_of(m, name) for m in owners):
            continue
        applies = ", ".join(str(v) for v, m in choices.items() if m in owners)
        own = ", ".join(o for o in options if o != tag) or "none"
        raise InputError(f"{where}: {key}.{name}: has no effect with {key}.{tag}: {value} (it applies to {applies}); "
                         f"remove it ({value}'s options: {own})")
    return build(chosen, {**kept, tag: value}, key + ".", where)


def _is_instance(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin in (list, dict):
        return isinstance(value, origin)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, Mapping)
    return isinstance(hint, type) and isinstance(value, hint)


def _to_number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def check_plain(value: Any, key: str, where: str) -> None:
    """Free-form values (model.config, smoke) must be YAML scalars, lists and mappings with string keys."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if math.isfinite(value):
            return
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(v, f"{key}[{i}]", where)
        return
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"{where}: {key}: expected string keys, got {show(k)}")
            check_plain(v, f"{key}.{key_text(k)}", where)
        return
    raise InputError(f"{where}: {key}: expected a number, string, boolean, list or mapping, got {show(value)}")


def error(where: str, key: str, message: str) -> InputError:
    return InputError(f"{where}: {key}: {message}" if where else f"{key}: {message}")
