"""Check the params a trigger sends against the task's declared params."""

from __future__ import annotations

from collections.abc import Mapping

from runyard.domain.models import ParamPassing, ParamSpec
from runyard.domain.text import escape_unstorable, text_problem


class ParamError(ValueError):
    """One bad param; `name` is the param (or key) at fault.

    `unstorable` marks a name or value holding text that cannot be stored
    (NUL, a lone surrogate): `name` and `value` then show it escaped.
    """

    def __init__(
        self, name: str, message: str, value: object = None, *, unstorable: bool = False
    ) -> None:
        self.name = name
        self.message = message
        self.value = value
        self.unstorable = unstorable
        super().__init__(f"{name}: {message}")


def resolve_params(specs: tuple[ParamSpec, ...], given: Mapping[str, object]) -> dict[str, str]:
    """Return every declared param's value: given, else default; raise ParamError.

    Numbers and booleans are accepted and turned into strings because JSON
    clients send them; anything nested is refused rather than guessed at.
    """
    _refuse_unstorable(given)
    declared = {spec.name: spec for spec in specs}
    for name in given:
        if name not in declared:
            known = ", ".join(declared) or "none"
            raise ParamError(name, f"unknown param; this task declares: {known}", given[name])
    resolved: dict[str, str] = {}
    for spec in specs:
        if spec.name in given:
            raw = given[spec.name]
            if isinstance(raw, bool):
                value = "true" if raw else "false"
            elif isinstance(raw, str | int | float):
                value = str(raw)
            else:
                raise ParamError(spec.name, "must be a string, number or boolean", raw)
        elif spec.default is not None:
            value = spec.default
        elif spec.required:
            raise ParamError(spec.name, "required param is missing")
        else:
            continue
        if spec.choices and value not in spec.choices:
            allowed = ", ".join(spec.choices)
            raise ParamError(spec.name, f"must be one of {allowed}", value)
        resolved[spec.name] = value
    return resolved


def _refuse_unstorable(given: Mapping[str, object]) -> None:
    # Before anything else, so the name shown in any later message can be encoded.
    for name, raw in given.items():
        problem = text_problem(name)
        if problem is not None:
            shown = escape_unstorable(name)
            raise ParamError(shown, f"the param name {problem}", shown, unstorable=True)
        if isinstance(raw, str):
            problem = text_problem(raw)
            if problem is not None:
                raise ParamError(name, problem, escape_unstorable(raw), unstorable=True)


def param_environment(specs: tuple[ParamSpec, ...], values: Mapping[str, str]) -> dict[str, str]:
    """Return the environment variables that carry env-passed params."""
    return {
        spec.env_name: values[spec.name]
        for spec in specs
        if spec.passing is ParamPassing.ENV and spec.name in values
    }


def param_arguments(specs: tuple[ParamSpec, ...], values: Mapping[str, str]) -> list[str]:
    """Return the positional arguments ("$1", "$2", ...) for arg-passed params.

    An unset optional param still takes its position (as "") so later
    arguments keep their numbers.
    """
    return [values.get(spec.name, "") for spec in specs if spec.passing is ParamPassing.ARG]
