"""Typed configuration: YAML files loaded into frozen dataclasses, with `--set key=value` overrides.

Every config section is a frozen dataclass whose fields carry type hints; `from_dict` checks each key against the
fields (unknown keys are errors), each value against its type (no silent coercion beyond int -> float), and calls the
dataclass's own `validate()` for impossible values. Errors name the file, the dotted field and the value.

    cfg = load_config(OrganismConfig, "study/configs/organism.yaml", overrides=["world.sharing=0.6"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from study.core.errors import ConfigError, UserError

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str, source: str) -> Any:
    """Return `value` checked (and minimally converted) against the type hint `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path, source)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(source, path, value, f"expected {_type_name(tp)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(source, path, value, f"expected one of {', '.join(repr(a) for a in args)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(source, path, value, f"expected a mapping of {tp.__name__} fields")
        return from_dict(tp, value, source=source, prefix=path)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]  # a scalar where a list is expected: a one-element list
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            item_type = args[0]
        elif origin is tuple:
            if len(value) != len(args):
                raise ConfigError(source, path, value, f"expected {len(args)} items")
            return tuple(_coerce(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
        else:
            item_type = args[0] if args else Any
        items = [_coerce(v, item_type, f"{path}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, path, value, "expected a mapping")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, f"{path}.<key>", source): _coerce(v, vt, f"{path}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(source, path, value, "expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(source, path, value, "expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(source, path, value, "expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(source, path, value, "expected a string")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(source, path, value, f"expected {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any] | None, source: str = "", prefix: str = "") -> T:
    """Build the dataclass `cls` from a mapping, checking keys, types and values."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(source, prefix or "<root>", data, f"expected a mapping of {cls.__name__} fields")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = unknown[0]
        where = f"{prefix}.{key}" if prefix else str(key)
        raise ConfigError(source, where, data[key], f"unknown key; valid keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        where = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], where, source)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as exc:
            # validate() names fields relative to its own section; give the full path and the file.
            field = f"{prefix}.{exc.field}" if prefix else exc.field
            raise ConfigError(source, field, exc.value, exc.expected) from None
    return obj


def to_dict(obj: Any) -> Any:
    """A plain, YAML/JSON-ready structure of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def check(condition: bool, field: str, value: object, expected: str) -> None:
    """For `validate()` methods: raise a ConfigError naming the field unless `condition` holds."""
    if not condition:
        raise ConfigError("", field, value, expected)


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a mapping key given twice (plain YAML keeps the last one, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            seen[key] = line
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first}, again at line {line})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def strict_load(text: str) -> Any:
    """yaml.safe_load, refusing duplicate mapping keys."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def config_file(path: str | Path) -> Path:
    """The YAML file a config argument names: a path, or a name under study/configs/ (UserError otherwise)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    named = CONFIG_DIR / f"{path}.yaml"
    if named.is_file() and "/" not in str(path):
        return named
    if p.is_dir():
        raise UserError(f"{path}: is a directory, not a config file (give a YAML file or a name: "
                        f"{', '.join(list_configs())})")
    raise UserError(f"{path}: no such config file (named configs: {', '.join(list_configs())})")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (safe loading, no duplicate keys), turning every failure into a one-line UserError."""
    p = config_file(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = strict_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{p}: malformed YAML{where}: {problem}") from None
    if data is None:
        raise UserError(f"{p}: empty config (it holds no fields; copy study/configs/micro.yaml to start from)")
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of config fields at the top level, got {type(data).__name__}")
    return data


def list_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (values parsed as YAML scalars/lists) to a nested mapping."""
    out = _deep_copy(data)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set world.sharing=0.6")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise UserError(f"--set {item!r}: empty key")
        if not raw.strip():
            raise UserError(f"--set {item!r}: empty value; give one (or null for none, '' for an empty string)")
        try:
            value = strict_load(raw)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise UserError(f"--set {item}: not valid YAML ({problem}); quote it to pass a string, e.g. "
                            f"--set \"{key}='{raw}'\"") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                raise UserError(f"--set {item!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                section: str | None = None) -> T:
    """Load `cls` from a YAML file (or defaults when `path` is None), apply overrides, validate.

    `section` picks a sub-mapping of the file (e.g. "organism" from a study config) when the file has it.
    """
    source = str(path) if path is not None else "<defaults>"
    data = read_yaml(path) if path is not None else {}
    if section is not None and section in data and isinstance(data[section], dict):
        data = data[section]
    elif section is not None and path is not None and set(data) - {f.name for f in dataclasses.fields(cls)}:
        # a study config without this section: use defaults for it
        data = {}
    data = apply_overrides(data, overrides)
    if overrides:
        source = f"{source} (with --set {' '.join(overrides)})"
    return from_dict(cls, data, source=source)
