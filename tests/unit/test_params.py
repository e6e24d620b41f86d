from __future__ import annotations

import pytest

from runyard.domain.models import ParamPassing, ParamSpec
from runyard.domain.params import ParamError, param_arguments, param_environment, resolve_params

SPECS = (
    ParamSpec("who", default="world"),
    ParamSpec("mode", required=True, choices=("fast", "slow")),
    ParamSpec("target", passing=ParamPassing.ARG),
    ParamSpec("count", passing=ParamPassing.ARG, default="1"),
    ParamSpec("api-key", env="API_KEY"),
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"mode": "fast"}, {"who": "world", "mode": "fast", "count": "1"}),
        ({"mode": "slow", "who": "you", "count": 3}, {"who": "you", "mode": "slow", "count": "3"}),
        (
            {"mode": "fast", "target": True},
            {"who": "world", "mode": "fast", "target": "true", "count": "1"},
        ),
    ],
)
def test_resolve_params(given: dict[str, object], expected: dict[str, str]) -> None:
    assert resolve_params(SPECS, given) == expected


@pytest.mark.parametrize(
    ("given", "name", "message"),
    [
        ({}, "mode", "required"),
        ({"mode": "medium"}, "mode", "must be one of fast, slow"),
        ({"mode": "fast", "nope": "x"}, "nope", "unknown param"),
        ({"mode": "fast", "who": ["a"]}, "who", "must be a string"),
        ({"mode": {"x": 1}}, "mode", "must be a string"),
    ],
)
def test_resolve_params_errors(given: dict[str, object], name: str, message: str) -> None:
    with pytest.raises(ParamError, match=message) as caught:
        resolve_params(SPECS, given)
    assert caught.value.name == name


def test_params_reach_env_and_argv_separately() -> None:
    values = {"who": "$(rm -rf /)", "mode": "fast", "count": "2", "api-key": "k"}
    assert param_environment(SPECS, values) == {
        "WHO": "$(rm -rf /)",
        "MODE": "fast",
        "API_KEY": "k",
    }
    # target is unset but keeps its position so count stays "$2"
    assert param_arguments(SPECS, values) == ["", "2"]
