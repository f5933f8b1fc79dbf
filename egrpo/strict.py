"""What every spec model shares (run configs, method configs, the Snakemake config, the evaluation
protocol, the world's settings, reward options): unknown keys are errors, a validated spec cannot
change, and a number is a number: a boolean where a number is meant (YAML 1.1 reads `yes`, `on`,
`true` as booleans, and pydantic would take them for 1) and a float that float32 cannot hold (NaN,
infinity, or a magnitude past float32's largest: the weights and the optimizer compute in float32)
are errors naming the key. The models' annotations are unchanged, so their JSON schema is too.
"""

from __future__ import annotations

import math
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

FLOAT32_MAX = 3.4028234663852886e38


def _bad_number(tp: Any, value: Any, loc: tuple = ()) -> tuple[tuple, str] | None:
    """(location, reason) of the first value inside `value` that annotation `tp` reads as a number but
    that is a boolean, or a float float32 cannot hold; None when there is none."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _bad_number(args[0], value, loc)
    if tp in (int, float):
        if isinstance(value, bool):
            return loc, "a number, not a boolean (YAML 1.1 reads yes/no/on/off as booleans)"
        if tp is float and isinstance(value, str):  # pydantic parses a string (PyYAML reads `1e-5` as one)
            try:
                value = float(value)
            except ValueError:
                return None  # pydantic's own error
        if tp is float and isinstance(value, (int, float)) and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
            return loc, f"a finite number within float32's range (|x| <= {FLOAT32_MAX:.4g})"
        return None
    if origin in (Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        if isinstance(value, bool):
            if any(_bare(a) is bool or a is Any for a in arms):
                return None  # a boolean is one of the union's own types
            return _bad_number(int, value, loc) if any(_bare(a) in (int, float) for a in arms) else None
        return next((found for a in arms if (found := _bad_number(a, value, loc))), None)
    if origin in (list, tuple, set, frozenset) and isinstance(value, (list, tuple)):
        for k, item in enumerate(value):
            item_tp = args[0] if origin is not tuple else (args[0] if len(args) == 2 and args[1] is Ellipsis
                                                            else args[k] if k < len(args) else None)
            found = item_tp is not None and _bad_number(item_tp, item, loc + (k,))
            if found:
                return found
        return None
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        for key, item in value.items():
            found = _bad_number(args[1], item, loc + (key,))
            if found:
                return found
    return None


class Strict(BaseModel):
    """Every spec's base: unknown keys are errors, a validated spec cannot change, numbers are numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        """Refuse a boolean, or a float beyond float32, where a field is a number (pydantic's lax mode
        takes True for 1; its location is the key's, as pydantic's own errors)."""
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in data:
                found = _bad_number(field.annotation, data[key], (key,))
                if found:
                    loc, reason = found
                    raise key_error(loc, reason, _at(data, loc))
        return data


def _bare(tp: Any) -> Any:
    return _bare(get_args(tp)[0]) if get_origin(tp) is Annotated else tp


def _at(data, loc: tuple):
    for part in loc:
        data = data[part]
    return data


def key_error(loc: tuple, message: str, value: Any, kind: str = "spec") -> ValidationError:
    """An error at key `loc` (relative to the model raising it) for a validator to raise: pydantic
    prefixes the model's own location, so the message names the full key, as its own errors do.
    `kind` is the error type (`missing`: the message stands alone, without the value)."""
    return ValidationError.from_exception_data("spec", [InitErrorDetails(
        type=PydanticCustomError(kind, message.replace("{", "{{").replace("}", "}}")), loc=loc, input=value)])


def relocate(e: ValidationError, loc: tuple) -> ValidationError:
    """`e` with every error's location prefixed by `loc` (a nested model validated by hand)."""
    return ValidationError.from_exception_data(e.title, [InitErrorDetails(
        type=PydanticCustomError(err["type"], err["msg"].replace("{", "{{").replace("}", "}}")),
        loc=loc + tuple(err["loc"]), input=err.get("input")) for err in e.errors()])
