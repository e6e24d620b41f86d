"""`runyard keys` and `runyard output` as a user runs them: real subprocesses, no daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from runyard_harness import CLI_TIMEOUT, CliRunner, OfflineConfig, cli_env

from runyard.domain.accounts import hash_secret

ACCOUNTS_CONFIG = """\
[daemon]
data_dir = "{data_dir}"

[tasks.report-daily]
run = "true"

[accounts.acme]
tasks = ["report-*"]

[accounts.zeta-corp]
max_concurrent_runs = 2
"""


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def _keys(runyard_cli: CliRunner, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = runyard_cli("--config", str(config), "keys", *args)
    _no_traceback(result)
    return result


def _listed(runyard_cli: CliRunner, config: Path) -> list[dict[str, Any]]:
    result = _keys(runyard_cli, config, "list", "--json")
    assert result.returncode == 0, result.stderr
    keys: list[dict[str, Any]] = json.loads(result.stdout)["keys"]
    return keys


def _database_bytes(data_dir: Path) -> bytes:
    # WAL mode: recent writes may sit in runyard.db-wal until a checkpoint.
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob("runyard.db*")))


# ----- keys -------------------------------------------------------------------------


def test_create_list_revoke(
    offline_config: OfflineConfig, runyard_cli: CliRunner, tmp_path: Path
) -> None:
    config = offline_config.path
    created = _keys(runyard_cli, config, "create", "--account", "default", "--label", "ci jobs")
    assert created.returncode == 0, created.stderr
    plaintext = created.stdout.strip()
    # Alone on stdout, so `KEY=$(runyard keys create ...)` captures exactly the key.
    assert created.stdout == plaintext + "\n"
    assert plaintext.startswith("ryk_") and len(plaintext) >= 40
    assert "only time it is shown" in created.stderr

    [listed] = _listed(runyard_cli, config)
    assert listed["account"] == "default"
    assert listed["label"] == "ci jobs"
    assert listed["created_at"].endswith("Z")
    assert listed["revoked_at"] is None
    assert listed["id"] in created.stderr

    table = _keys(runyard_cli, config, "list")
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == ["ID", "ACCOUNT", "LABEL", "CREATED", "REVOKED"]
    assert listed["id"] in table.stdout and "ci jobs" in table.stdout
    assert plaintext not in table.stdout + table.stderr

    database = _database_bytes(tmp_path / "data")
    assert plaintext.encode() not in database
    assert hash_secret(plaintext).encode() in database

    revoked = _keys(runyard_cli, config, "revoke", listed["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"revoked key {listed['id']} of account default\n"
    [after] = _listed(runyard_cli, config)
    assert after["revoked_at"] is not None

    again = _keys(runyard_cli, config, "revoke", listed["id"])
    assert again.returncode == 0, again.stderr
    assert "already revoked" in again.stdout
    assert _listed(runyard_cli, config)[0]["revoked_at"] == after["revoked_at"]


def test_each_create_prints_a_new_key(
    offline_config: OfflineConfig, runyard_cli: CliRunner
) -> None:
    printed = {
        _keys(runyard_cli, offline_config.path, "create", "--account", "default").stdout
        for _ in range(3)
    }
    assert len(printed) == 3
    listed = _listed(runyard_cli, offline_config.path)
    assert [key["label"] for key in listed] == ["", "", ""]
    assert listed == sorted(listed, key=lambda key: (key["created_at"], key["id"]))


def test_list_without_keys(offline_config: OfflineConfig, runyard_cli: CliRunner) -> None:
    result = _keys(runyard_cli, offline_config.path, "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no keys")
    assert _listed(runyard_cli, offline_config.path) == []


def test_revoke_unknown_key(offline_config: OfflineConfig, runyard_cli: CliRunner) -> None:
    result = _keys(runyard_cli, offline_config.path, "revoke", "01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "runyard: key '01HZZZZZZZZZZZZZZZZZZZZZZZ' not found (`runyard keys list` shows the ids)\n"
    )


def test_create_refuses_an_undeclared_account(tmp_path: Path, runyard_cli: CliRunner) -> None:
    config = tmp_path / "runyard.toml"
    config.write_text(ACCOUNTS_CONFIG.format(data_dir=tmp_path / "data"), encoding="utf-8")
    # Declared accounts replace the default one.
    for account in ("default", "ACME", "nobody"):
        result = _keys(runyard_cli, config, "create", "--account", account)
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr == (
            f"runyard: account {account!r} is not declared in {config} "
            "(declared accounts: acme, zeta-corp)\n"
        )
    assert _listed(runyard_cli, config) == []
    created = _keys(runyard_cli, config, "create", "--account", "zeta-corp")
    assert created.returncode == 0, created.stderr
    assert [key["account"] for key in _listed(runyard_cli, config)] == ["zeta-corp"]


def test_create_needs_an_account(offline_config: OfflineConfig, runyard_cli: CliRunner) -> None:
    result = _keys(runyard_cli, offline_config.path, "create")
    assert result.returncode == 2
    assert "--account" in result.stderr


def test_keys_honour_data_dir(
    offline_config: OfflineConfig, runyard_cli: CliRunner, tmp_path: Path
) -> None:
    other = tmp_path / "elsewhere"
    config = str(offline_config.path)
    created = runyard_cli(
        "--config", config, "--data-dir", str(other), "keys", "create", "--account", "default"
    )
    assert created.returncode == 0, created.stderr
    assert (other / "runyard.db").exists()
    assert not (tmp_path / "data").exists()
    assert _listed(runyard_cli, offline_config.path) == []


def test_keys_report_an_invalid_config(tmp_path: Path, runyard_cli: CliRunner) -> None:
    config = tmp_path / "runyard.toml"
    config.write_text("[accounts.a]\nbilling_anchor = 0\n", encoding="utf-8")
    result = _keys(runyard_cli, config, "list")
    assert result.returncode == 1
    assert result.stderr == (
        f"{config}: accounts.a.billing_anchor: must be between 1 and 31, got 0\n"
    )


# ----- output -----------------------------------------------------------------------


def _output(*args: str, stdin: str, output_dir: Path | None) -> subprocess.CompletedProcess[str]:
    env = cli_env() if output_dir is None else cli_env(RUNYARD_OUTPUT_DIR=str(output_dir))
    result = subprocess.run(
        [sys.executable, "-m", "runyard", "output", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    _no_traceback(result)
    return result


def test_output_appends_rows_from_stdin(tmp_path: Path) -> None:
    first = _output("sheet", stdin='name,note\r\nann,"a, b"\r\n\r\n', output_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (first.stdout, first.stderr) == ("", "")
    jsonl = '["bob", 2, true, null]\n\n["cy", 1.5]\n'
    second = _output("sheet", "--format", "jsonl", stdin=jsonl, output_dir=tmp_path)
    assert second.returncode == 0, second.stderr
    third = _output("sheet", "--format", "tsv", stdin="dee\tx,y\n", output_dir=tmp_path)
    assert third.returncode == 0, third.stderr
    assert (tmp_path / "sheet.csv").read_text(encoding="utf-8") == (
        'name,note\nann,"a, b"\nbob,2,true,\ncy,1.5\ndee,"x,y"\n'
    )
    assert [path.name for path in tmp_path.iterdir()] == ["sheet.csv"]


def test_output_without_output_dir() -> None:
    result = _output("sheet", stdin="a,b\n", output_dir=None)
    assert result.returncode == 2
    assert result.stderr == (
        "runyard: $RUNYARD_OUTPUT_DIR is not set: "
        "`runyard output` works inside a run started by runyard\n"
    )


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        pytest.param(
            ["../escape"],
            "a\n",
            "invalid output token '../escape': use up to 100 letters, digits, spaces, "
            "'.', '_' or '-', starting with a letter or digit",
            id="token",
        ),
        pytest.param(
            ["t", "--format", "jsonl"],
            '["a"]\n{"a": 1}\n',
            'stdin line 2: expected an array of cells like ["a", "b"]',
            id="jsonl-object",
        ),
        pytest.param(
            ["t", "--format", "jsonl"],
            "[1, [2]]\n",
            'stdin line 1: expected an array of cells like ["a", "b"]',
            id="jsonl-nested",
        ),
        pytest.param(
            ["t", "--format", "jsonl"],
            "[1,\n",
            "stdin line 1: invalid JSON: Expecting value",
            id="jsonl-syntax",
        ),
    ],
)
def test_output_refuses_bad_input(
    tmp_path: Path, args: list[str], stdin: str, message: str
) -> None:
    result = _output(*args, stdin=stdin, output_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"runyard: {message}\n"
    # Nothing half-written: the rows before the bad line are not appended either.
    assert list(tmp_path.iterdir()) == []


def test_output_refuses_an_unknown_format(tmp_path: Path) -> None:
    result = _output("t", "--format", "xml", stdin="a\n", output_dir=tmp_path)
    assert result.returncode == 2
    assert "xml" in result.stderr
