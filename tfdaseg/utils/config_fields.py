"""Configs as typed dataclasses whose fields carry their flag: help, range, choices, parser.

A section of the training config (a method's hyper-parameters, the loop, the optimiser) is a
frozen dataclass whose fields are declared with `field`; `define_flags` derives one absl flag per
field from the annotation (bool, int, float, str, tuples as lists, `X | None`), `from_flags` reads
the values back and `check` enforces the declared ranges. A field's flag keeps the field's name
unless `flag=` renames it (the reference's `--input_size`), so the dataclass is the one place a
hyper-parameter is declared.

Several dataclasses may declare the same field (two methods sharing `lambda_adv_target1`): they
share one flag, which must have the same kind; a flag the user did not set takes each
dataclass's own default, so two methods can default the same name differently.
"""

import dataclasses
import json
import types
import typing
from typing import Any, Callable, Sequence

from absl import flags


class ConfigError(ValueError):
  """A setting (or combination) that cannot work; the message names the flag."""


def field(default: Any, help: str, *, choices: Sequence[str] | None = None,  # noqa: A002
          minimum: float | None = None, maximum: float | None = None,
          above: float | None = None, below: float | None = None, flag: str | None = None,
          parse: Callable[[Any, str], Any] | None = None) -> Any:
  """A dataclass field that is also a flag.

  Args:
    default: The default (the reference's value where there is one). Dicts are copied.
    help: The flag's help; cite the reference value.
    choices: Allowed values of a string field.
    minimum: Inclusive lower bound.
    maximum: Inclusive upper bound.
    above: Exclusive lower bound.
    below: Exclusive upper bound.
    flag: The flag's name when it is not the field's.
    parse: (flag value, flag name) -> field value, for values that need parsing (raises
      ConfigError naming the flag).

  Returns:
    A `dataclasses.field`.
  """
  metadata = {"help": help, "choices": tuple(choices) if choices else None, "minimum": minimum,
              "maximum": maximum, "above": above, "below": below, "flag": flag, "parse": parse}
  if isinstance(default, dict):
    return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def flag_name(f: dataclasses.Field) -> str:
  """The flag of a dataclass field."""
  return f.metadata.get("flag") or f.name


def config_fields(cls: type) -> list[dataclasses.Field]:
  """The fields of `cls` declared with `field` (others are not flags)."""
  return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def _base_type(annotation: Any) -> Any:
  # `int | None` -> int; `tuple[int, ...]` stays as is.
  if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0]
  return annotation


def _kind(annotation: Any, choices) -> str:
  base = _base_type(annotation)
  if typing.get_origin(base) is tuple or base is tuple:
    return "list"
  if base is dict:
    return "json"
  if base is str and choices:
    return "enum"
  return {bool: "bool", int: "integer", float: "float", str: "string"}[base]


_DEFINE = {"bool": flags.DEFINE_bool, "integer": flags.DEFINE_integer,
           "float": flags.DEFINE_float, "string": flags.DEFINE_string,
           "list": flags.DEFINE_list, "json": flags.DEFINE_string}


def _flag_default(kind: str, default: Any) -> Any:
  if default is None:
    return None
  if kind == "list":
    return [str(v) for v in default]
  if kind == "json":
    return json.dumps(default)
  return default


def define_flags(cls: type, fv: flags.FlagValues, *, owner: str = "") -> None:
  """Declares a flag for every `field` of `cls` on `fv` (shared names are defined once).

  Args:
    cls: A dataclass built with `field`.
    fv: Where the flags go.
    owner: Who declares them, appended to the help ("adaptsegnet"), for shared flags.

  Raises:
    TypeError: when a flag already on `fv` has another kind (two dataclasses disagree).
  """
  hints = typing.get_type_hints(cls)
  for f in config_fields(cls):
    name, choices = flag_name(f), f.metadata["choices"]
    kind = _kind(hints[f.name], choices)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    suffix = f" [{owner}: {default!r}]" if owner else ""
    if name in fv:
      existing = fv[name]
      if getattr(existing, "_tfdaseg_kind", kind) != kind:
        raise TypeError(f"flag --{name}: {cls.__name__} declares a {kind}, another config a "
                        f"{existing._tfdaseg_kind}")
      existing.help += suffix
      continue
    help_text = f.metadata["help"] + suffix
    if kind == "enum":
      flags.DEFINE_enum(name, _flag_default(kind, default), list(choices), help_text,
                        flag_values=fv)
    else:
      _DEFINE[kind](name, _flag_default(kind, default), help_text, flag_values=fv)
    fv[name]._tfdaseg_kind = kind


def _convert(f: dataclasses.Field, annotation: Any, value: Any) -> Any:
  name, parse = flag_name(f), f.metadata["parse"]
  if parse is not None:
    return parse(value, name)
  if value is None:
    return None
  kind = _kind(annotation, f.metadata["choices"])
  if kind == "list":
    element = (typing.get_args(_base_type(annotation)) or (str,))[0]
    try:
      return tuple(element(v) for v in value)
    except ValueError:
      noun = {int: "integers", float: "numbers"}.get(element, "values")
      raise ConfigError(f"--{name}={','.join(value)}: expected {noun}, e.g. 3,4,23,3"
                        ) from None
  if kind == "json":
    try:
      parsed = json.loads(value or "{}")
    except json.JSONDecodeError as e:
      raise ConfigError(f"--{name}: not valid JSON ({e})") from None
    if not isinstance(parsed, dict):
      raise ConfigError(f"--{name} must be a JSON object")
    return parsed
  return value


def from_flags(cls: type, fv: flags.FlagValues, **values: Any) -> Any:
  """Builds `cls` from the parsed flags; fields whose flag was not given keep `cls`'s default.

  Args:
    cls: A dataclass built with `field`.
    fv: Parsed flags (declared with `define_flags`).
    **values: Fields that are not flags, or overrides.

  Returns:
    The instance, range-checked.

  Raises:
    ConfigError: naming the flag, for a value that does not parse or is out of range.
  """
  hints = typing.get_type_hints(cls)
  for f in config_fields(cls):
    if f.name in values:
      continue
    flag = fv[flag_name(f)]
    if flag.present:
      values[f.name] = _convert(f, hints[f.name], flag.value)
  instance = cls(**values)
  check(instance)
  return instance


def check(instance: Any) -> None:
  """Enforces the ranges and choices its fields declare.

  Raises:
    ConfigError: `--flag=value must be ...` for the first field out of range.
  """
  for f in config_fields(type(instance)):
    value, meta, name = getattr(instance, f.name), f.metadata, flag_name(f)
    if value is None or isinstance(value, (tuple, dict, str)) and not meta["choices"]:
      continue
    if meta["choices"] and value not in meta["choices"]:
      raise ConfigError(f"--{name}={value!r}: known: {', '.join(meta['choices'])}")
    bounds = (("minimum", lambda v, b: v >= b, ">="), ("maximum", lambda v, b: v <= b, "<="),
              ("above", lambda v, b: v > b, ">"), ("below", lambda v, b: v < b, "<"))
    for key, holds, sign in bounds:
      if meta[key] is not None and not holds(value, meta[key]):
        raise ConfigError(f"--{name}={value} must be {sign} {meta[key]:g}")

