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


@pytest.mark.parametrize(
    ("given", "name", "message", "shown"),
    [
        pytest.param(
            {"mode": "fast", "who": "a\x00"},
            "who",
            "contains a NUL character (\\u0000) at character 2, which cannot be stored",
            "a\\u0000",
            id="nul-value",
        ),
        pytest.param(
            {"mode": "\udc80"},
            "mode",
            "contains a lone surrogate (\\udc80) at character 1, which is not valid Unicode",
            "\\udc80",
            id="surrogate-value-checked-before-choices",
        ),
        pytest.param(
            {"mode": "fast", "x\udc80": "1"},
            "x\\udc80",
            "the param name contains a lone surrogate (\\udc80) at character 2, "
            "which is not valid Unicode",
            "x\\udc80",
            id="surrogate-name-checked-before-unknown",
        ),
    ],
)
def test_params_that_cannot_be_stored_are_refused(
    given: dict[str, object], name: str, message: str, shown: str
) -> None:
    with pytest.raises(ParamError) as caught:
        resolve_params(SPECS, given)
    assert caught.value.unstorable
    assert (caught.value.name, caught.value.message, caught.value.value) == (name, message, shown)


def test_other_param_errors_are_not_about_text() -> None:
    with pytest.raises(ParamError) as caught:
        resolve_params(SPECS, {"mode": "medium"})
    assert not caught.value.unstorable


def test_params_reach_env_and_argv_separately() -> None:
    values = {"who": "$(rm -rf /)", "mode": "fast", "count": "2", "api-key": "k"}
    assert param_environment(SPECS, values) == {
        "WHO": "$(rm -rf /)",
        "MODE": "fast",
        "API_KEY": "k",
    }
    # target is unset but keeps its position so count stays "$2"
    assert param_arguments(SPECS, values) == ["", "2"]
