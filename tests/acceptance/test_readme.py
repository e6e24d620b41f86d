"""The README's CLI lines, run as written against a daemon started as `make run` starts it.

The lines come from README.md's `sh` code blocks, so the README and this test
cannot drift apart: every line that runs `runyard` (or puts it on PATH) is run
in order, in one shell, so `RUN=$(runyard run ...)` feeds the lines after it.
Each must exit 0, or as the README says for the few listed in
`DOCUMENTED_EXITS`.

The daemon is started the way `make run` starts it: the example config copied
to `./runyard.toml` and `.venv/bin/runyard --config runyard.toml serve` from a
shell whose PATH lacks `.venv/bin`. It runs in a temporary copy of that layout
(only the port differs from the example), never in the user's `.runyard`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from runyard_harness import cli_env, free_port, stop_daemon, stop_process, wait_for_health

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
EXAMPLE = ROOT / "runyard" / "examples" / "runyard.toml"
VENV = Path(sys.executable).parent.parent
ACTIVATE = ". .venv/bin/activate"
# Lines whose exit status the README documents as something other than 0.
DOCUMENTED_EXITS = {
    # "exits 0 if the last attempt succeeded, else 1": it fails half of the time.
    "runyard run flaky --wait": {0, 1},
}
WALK_TIMEOUT = 300.0
_CODE_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.DOTALL | re.MULTILINE)
_CLI_LINE = re.compile(r"^(?:[A-Z_]+=\$\()?runyard\b")


def readme_cli_lines(text: str) -> list[str]:
    """Return the lines of the `sh` blocks that run `runyard` or put it on PATH, in order."""
    lines: list[str] = []
    for block in _CODE_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line == ACTIVATE or line.startswith(f"{ACTIVATE} ") or _CLI_LINE.match(line):
                lines.append(line)
    return lines


def command_of(line: str) -> str:
    """Return a line without its trailing comment and surrounding spaces."""
    return line.split("  #", 1)[0].strip()


def test_the_walk_covers_the_readme() -> None:
    # Guards against an extraction that quietly finds nothing to run.
    commands = [command_of(line) for line in readme_cli_lines(README.read_text("utf-8"))]
    assert commands[0] == ACTIVATE
    assert "runyard tasks" in commands
    assert "runyard keys revoke $KEY" in commands
    assert len(commands) >= 15
    for command in DOCUMENTED_EXITS:
        assert command in commands, f"{command!r} is no longer in the README"
    # `runyard serve` is the daemon this test starts itself, as `make run` does.
    assert not any(command.startswith("runyard serve") for command in commands)


def test_make_run_serves_the_example_from_the_current_directory() -> None:
    # What the walk below reproduces; if `make run` changes, the walk must too.
    makefile = MAKEFILE.read_text("utf-8")
    assert re.search(r"^CONFIG \?= runyard\.toml$", makefile, re.MULTILINE)
    assert re.search(r"^EXAMPLE := runyard/examples/runyard\.toml$", makefile, re.MULTILINE)
    assert re.search(r"^\tcp \$\(EXAMPLE\) \$@$", makefile, re.MULTILINE)
    assert re.search(r"^\texec \$\(BIN\)/runyard --config \$\(CONFIG\) serve$", makefile, re.M)


@dataclass
class Home:
    """A copy of the repository's layout after `make run`: .venv, runyard.toml, .runyard."""

    root: Path
    port: int


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    root = tmp_path / "repo"
    root.mkdir()
    # The test's own virtualenv stands in for the repository's .venv.
    (root / ".venv").symlink_to(VENV)
    port = free_port()
    example = EXAMPLE.read_text(encoding="utf-8")
    # The one change from `make run`: a free port, never the user's daemon's.
    config, count = re.subn(r"(?m)^port = \d+", f"port = {port}", example)
    assert count == 1, "the example config should set [daemon] port once"
    (root / "runyard.toml").write_text(config, encoding="utf-8")
    # As from a fresh shell: no runyard settings, and PATH without the virtualenv.
    env = _without_venv(cli_env())
    output = tmp_path / "daemon.log"
    command = [str(root / ".venv" / "bin" / "runyard"), "--config", "runyard.toml", "serve"]
    with output.open("wb") as log:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    problem = wait_for_health(f"http://127.0.0.1:{port}", process)
    if problem is not None:
        stop_process(process)
        raise AssertionError(f"{problem}; its output:\n{output.read_text(errors='replace')}")
    try:
        yield Home(root, port)
    finally:
        stop_daemon(process, output)


def _without_venv(env: dict[str, str]) -> dict[str, str]:
    bin_dir = str(VENV / "bin")
    path = [entry for entry in env.get("PATH", "").split(os.pathsep) if entry and entry != bin_dir]
    env = {**env, "PATH": os.pathsep.join(path) or "/usr/bin:/bin"}
    env.pop("VIRTUAL_ENV", None)
    return env


def test_every_cli_line_of_the_readme_works_as_written(home: Home) -> None:
    lines = readme_cli_lines(README.read_text("utf-8"))
    statuses = home.root / "statuses"
    script = ["set -u"]
    for number, line in enumerate(lines):
        script += [
            f"printf '### %s\\n' {_quoted(line)}; printf '### %s\\n' {_quoted(line)} >&2",
            line,
            f'echo "{number} $?" >> {statuses}',
        ]
    env = _without_venv(cli_env())
    env["COLUMNS"] = "200"
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=home.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=WALK_TIMEOUT,
    )
    transcript = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    codes = dict(
        (int(number), int(code))
        for number, code in (row.split() for row in statuses.read_text().splitlines())
    )
    assert sorted(codes) == list(range(len(lines))), transcript
    for number, line in enumerate(lines):
        allowed = DOCUMENTED_EXITS.get(command_of(line), {0})
        assert codes[number] in allowed, f"`{line}` exited {codes[number]}\n{transcript}"
    assert "Traceback" not in transcript, transcript
    # The walk used the copy's data dir: the key it created is in its database.
    assert (home.root / ".runyard" / "runyard.db").is_file()


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
