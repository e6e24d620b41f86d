"""`secrets` and `secrets_file` in the config: checked like env, merged with [defaults]."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.config.loader import parse_config_text
from runyard.exceptions import ConfigError

PATH = Path("/srv/runyard/runyard.toml")


def test_secrets_merge_with_defaults_and_the_file_is_relative_to_the_config() -> None:
    config = parse_config_text(
        '[defaults]\nsecrets = { A = "da", B = "db" }\n'
        '[tasks.t]\nrun = "x"\nsecrets = { B = "tb" }\nsecrets_file = "keys/t.env"\n',
        PATH,
        environ={},
    )
    task = config.tasks["t"]
    assert dict(task.secrets) == {"A": "da", "B": "tb"}
    assert task.secrets_file == "/srv/runyard/keys/t.env"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('secrets = { "1X" = "v" }', "tasks.t.secrets"),
        ('secrets = "KEY=v"', "tasks.t.secrets: expected a table"),
        ('secrets_file = ""', "tasks.t.secrets_file: must not be empty"),
    ],
)
def test_bad_secrets_are_named(line: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(f'[tasks.t]\nrun = "x"\n{line}\n', PATH, environ={})
    assert problem in str(caught.value)
