"""`runyard schema`: accepts what `runyard validate` accepts, refuses the keys it refuses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from runyard.config.loader import EXAMPLE_CONFIG_PATH, parse_config_text
from runyard.config.schema import config_schema
from runyard.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
AT = Path("/srv/runyard/runyard.toml")
ENVIRON = {"DOMAIN": "example.org", "BACKUP_TARGET": "/mnt"}


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = config_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _readme_configs() -> list[str]:
    """The README's ```toml blocks that runyard itself accepts as a whole config."""
    blocks = re.findall(r"^```toml\n(.*?)^```", README.read_text("utf-8"), re.DOTALL | re.M)
    accepted = []
    for block in blocks:
        try:
            parse_config_text(block, AT, environ=ENVIRON)
        except ConfigError:
            continue
        accepted.append(block)
    return accepted


def test_the_readme_has_configs_to_check() -> None:
    assert len(_readme_configs()) >= 4


@pytest.mark.parametrize(
    "text",
    [EXAMPLE_CONFIG_PATH.read_text("utf-8"), *_readme_configs()],
    ids=lambda text: text.splitlines()[0][:40],
)
def test_every_accepted_config_is_valid(validator: Draft202012Validator, text: str) -> None:
    errors = [error.message for error in validator.iter_errors(tomllib.loads(text))]
    assert errors == []


@pytest.mark.parametrize(
    "text",
    [
        '[servics.web]\nrun = "x"\n',  # unknown top-level table
        "[daemon]\nprot = 9477\n",
        '[tasks.a]\nrun = "x"\ntimout = "5m"\n',
        '[tasks.a]\nrun = "x"\n[[tasks.a.params]]\nname = "p"\ndefualt = "1"\n',
        '[defaults]\nrun = "x"\n',  # task-only key in [defaults]
        "[accounts.acme]\nmax_concurent_runs = 2\n",
        "[scheduler]\ntz = 'UTC'\n",
        "[metrics]\npublik = true\n",
        '[tasks.a]\ndescription = "no run"\n',
        '[tasks."bad name!"]\nrun = "x"\n',
        "[daemon]\nport = 'http'\n",
        '[tasks.a]\nrun = "x"\ntimeout = true\n',
        '[tasks.a]\nrun = "x"\ntimeout = "soon"\n',
        '[tasks.a]\nrun = "x"\non_overlap = "sometimes"\n',
        '[tasks.a]\nrun = "x"\nenv = { A = 1 }\n',
    ],
)
def test_what_validate_refuses_the_schema_refuses(
    validator: Draft202012Validator, text: str
) -> None:
    with pytest.raises(ConfigError):
        parse_config_text(text, AT, environ={})
    assert list(validator.iter_errors(tomllib.loads(text))), text


def test_the_cli_prints_the_schema() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runyard", "schema"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == config_schema()
