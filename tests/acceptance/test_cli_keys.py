"""`runyard keys` and `runyard output` as a user runs them: real subprocesses.

`keys` talks to the daemon when one answers and works on an existing database
otherwise; every keys test runs both ways and expects the same answers.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from runyard_harness import (
    CLI_TIMEOUT,
    CONFIG,
    TEST_TOKEN,
    CliRunner,
    cli_env,
    free_port,
    run_cli,
    start_daemon,
    stop_daemon,
)

from runyard.domain.accounts import hash_secret
from runyard.store import RunStore, database_url

ACCOUNTS_CONFIG = """\
[daemon]
port = {port}
data_dir = "{data_dir}"

[tasks.report-daily]
run = "true"

[accounts.acme]
tasks = ["report-*"]

[accounts.zeta-corp]
max_concurrent_runs = 2
"""

DATABASE_NOTICE = "runyard: no daemon answered; working on the database "


@dataclass
class KeysHome:
    """A config and its data dir, with a daemon serving them or only their database."""

    config: Path
    data_dir: Path
    env: dict[str, str]
    daemon_url: str | None  # None: no daemon runs; the database exists

    def keys(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = run_cli("--config", str(self.config), "keys", *args, env=self.env)
        _no_traceback(result)
        if self.daemon_url is None:
            assert result.stderr.startswith(DATABASE_NOTICE), result.stderr
        else:
            assert DATABASE_NOTICE not in result.stderr
        return result

    def listed(self) -> list[dict[str, Any]]:
        result = self.keys("list", "--json")
        assert result.returncode == 0, result.stderr
        keys: list[dict[str, Any]] = json.loads(result.stdout)["keys"]
        return keys

    def error(self, result: subprocess.CompletedProcess[str]) -> str:
        """Return stderr without the line saying no daemon answered."""
        return "".join(
            line
            for line in result.stderr.splitlines(keepends=True)
            if not line.startswith(DATABASE_NOTICE)
        )


@contextlib.contextmanager
def keys_home(tmp_path: Path, how: str, text: str = CONFIG) -> Iterator[KeysHome]:
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "runyard.toml"
    config.write_text(text.format(port=port, data_dir=data_dir), encoding="utf-8")
    env = cli_env(RUNYARD_TOKEN=TEST_TOKEN)
    if how == "database":
        # The database a daemon left behind: the real file, migrated.
        data_dir.mkdir()
        RunStore.open(database_url(data_dir, {})).close()
        yield KeysHome(config, data_dir, env, None)
        return
    output = tmp_path / "daemon.log"
    process, url = start_daemon(config, env, output, port)
    try:
        yield KeysHome(config, data_dir, env, url)
    finally:
        stop_daemon(process, output)


@pytest.fixture(params=["daemon", "database"])
def home(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeysHome]:
    with keys_home(tmp_path, request.param) as found:
        yield found


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def _database_bytes(data_dir: Path) -> bytes:
    # WAL mode: recent writes may sit in runyard.db-wal until a checkpoint.
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob("runyard.db*")))


# ----- keys -------------------------------------------------------------------------


def test_create_list_revoke(home: KeysHome) -> None:
    created = home.keys("create", "--account", "default", "--label", "ci jobs")
    assert created.returncode == 0, created.stderr
    plaintext = created.stdout.strip()
    # Alone on stdout, so `KEY=$(runyard keys create ...)` captures exactly the key.
    assert created.stdout == plaintext + "\n"
    assert plaintext.startswith("ryk_") and len(plaintext) >= 40
    assert "only time it is shown" in created.stderr

    [listed] = home.listed()
    assert listed["account"] == "default"
    assert listed["label"] == "ci jobs"
    assert listed["created_at"].endswith("Z")
    assert listed["revoked_at"] is None
    assert listed["id"] in created.stderr
    # The key names its own id, so whoever holds it can revoke it.
    assert plaintext.startswith(f"ryk_{listed['id']}_")

    table = home.keys("list")
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == ["ID", "ACCOUNT", "LABEL", "CREATED", "REVOKED"]
    assert listed["id"] in table.stdout and "ci jobs" in table.stdout
    assert plaintext not in table.stdout + table.stderr

    database = _database_bytes(home.data_dir)
    assert plaintext.encode() not in database
    assert hash_secret(plaintext).encode() in database

    revoked = home.keys("revoke", listed["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"revoked key {listed['id']} of account default\n"
    [after] = home.listed()
    assert after["revoked_at"] is not None

    again = home.keys("revoke", plaintext)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"key {listed['id']} of account default was already revoked\n"
    assert home.listed()[0]["revoked_at"] == after["revoked_at"]


def test_json_answers(home: KeysHome) -> None:
    created = home.keys("create", "--account", "default", "--label", "x", "--json")
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    assert set(body) == {"id", "account", "label", "created_at", "revoked_at", "key"}
    assert (body["account"], body["label"], body["revoked_at"]) == ("default", "x", None)
    revoked = home.keys("revoke", body["key"], "--json")
    assert revoked.returncode == 0, revoked.stderr
    answer = json.loads(revoked.stdout)
    assert answer["id"] == body["id"]
    assert answer["already_revoked"] is False
    assert answer["revoked_at"].endswith("Z")


def test_each_create_prints_a_new_key(home: KeysHome) -> None:
    printed = {home.keys("create", "--account", "default").stdout for _ in range(3)}
    assert len(printed) == 3
    listed = home.listed()
    assert [key["label"] for key in listed] == ["", "", ""]
    assert listed == sorted(listed, key=lambda key: (key["created_at"], key["id"]))


def test_list_without_keys(home: KeysHome) -> None:
    result = home.keys("list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no keys")
    assert home.listed() == []


def test_revoke_unknown_key(home: KeysHome) -> None:
    result = home.keys("revoke", "01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert result.returncode == 1
    assert result.stdout == ""
    assert home.error(result) == (
        "runyard: key '01HZZZZZZZZZZZZZZZZZZZZZZZ' not found (`runyard keys list` shows the ids)\n"
    )


@pytest.mark.parametrize("how", ["daemon", "database"])
def test_create_refuses_an_undeclared_account(tmp_path: Path, how: str) -> None:
    with keys_home(tmp_path, how, ACCOUNTS_CONFIG) as home:
        # Declared accounts replace the default one.
        for account in ("default", "ACME", "nobody"):
            result = home.keys("create", "--account", account)
            assert result.returncode == 2
            assert result.stdout == ""
            assert home.error(result) == (
                f"runyard: account {account!r} is not declared in {home.config} "
                "(declared accounts: acme, zeta-corp)\n"
            )
        assert home.listed() == []
        created = home.keys("create", "--account", "zeta-corp")
        assert created.returncode == 0, created.stderr
        assert [key["account"] for key in home.listed()] == ["zeta-corp"]


def test_create_needs_an_account(home: KeysHome) -> None:
    result = run_cli("--config", str(home.config), "keys", "create", env=home.env)
    assert result.returncode == 2
    assert "--account" in result.stderr


def test_keys_through_the_daemon_work_at_once(tmp_path: Path) -> None:
    with keys_home(tmp_path, "daemon") as home:
        assert home.daemon_url is not None
        key = home.keys("create", "--account", "default").stdout.strip()
        call = f"{home.daemon_url}/api/v3/list-automations"
        assert httpx.post(call, json={"key": key}, timeout=5).status_code == 200
        assert home.keys("revoke", key).returncode == 0
        answer = httpx.post(call, json={"key": key}, timeout=5)
        assert (answer.status_code, answer.json()) == (
            401,
            {"status": "error", "message": "Invalid key"},
        )


@pytest.mark.parametrize(
    "args",
    [["create", "--account", "default"], ["list"], ["revoke", "01HZZZZZZZZZZZZZZZZZZZZZZZ"]],
    ids=["create", "list", "revoke"],
)
def test_without_daemon_or_database_nothing_is_created(
    tmp_path: Path, runyard_cli: CliRunner, args: list[str]
) -> None:
    config = tmp_path / "runyard.toml"
    port = free_port()
    config.write_text(CONFIG.format(port=port, data_dir=tmp_path / "data"), encoding="utf-8")
    typo = tmp_path / "dta"
    result = runyard_cli("--config", str(config), "--data-dir", str(typo), "keys", *args)
    _no_traceback(result)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"runyard: cannot reach the daemon at http://127.0.0.1:{port} (from [daemon] host and "
        f"port in {config}): is `runyard serve` running?; and there is no database at "
        f"{typo / 'runyard.db'} (data dir {typo} (--data-dir)) to work on directly. Start the "
        "daemon first (`runyard serve`), or point --config or --data-dir at the daemon's "
        "data dir.\n"
    )
    assert not typo.exists()
    assert not (tmp_path / "data").exists()


def test_keys_report_an_invalid_config(tmp_path: Path, runyard_cli: CliRunner) -> None:
    config = tmp_path / "runyard.toml"
    config.write_text(
        f"[daemon]\nport = {free_port()}\n[accounts.a]\nbilling_anchor = 0\n", encoding="utf-8"
    )
    result = runyard_cli("--config", str(config), "keys", "list")
    _no_traceback(result)
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
