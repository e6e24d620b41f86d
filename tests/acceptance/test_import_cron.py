"""`runyard import cron` on real files, and imported tasks doing what the real cron does.

The fidelity test hands one crontab to Debian's cron (started by the test
when none runs) and to `runyard import cron`; each job records its
environment, working directory and standard input. cron runs them first;
then the daemon runs the imported tasks, and the records must match. It
fails, never skips, when cron is missing (`make test` installs it).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runyard_harness import (
    TEST_TOKEN,
    cli_env,
    free_port,
    run_cli,
    start_daemon,
    stop_daemon,
)

CRON = Path("/usr/sbin/cron")
CRON_D = Path("/etc/cron.d")
# Every rule of the translation, one job each. {out} is where a job writes.
CRAFTED = r"""# made by runyard's tests
MAILTO=""
SHELL=/bin/bash
GREETING="hello from cron"

# records what cron gives a job
* * * * * root (env | sort; echo "cwd=$(pwd)"; echo "stdin:"; cat) > {out}/plain 2>&1
PATH=/usr/local/bin:/usr/bin:/bin
* * * * * root (env | sort; echo "cwd=$(pwd)"; echo "stdin:"; cat) > {out}/input %one%two 100\% sure
HOME=/tmp
* * * * * root false; (env | sort; echo "cwd=$(pwd)"; echo "stdin:"; cat) > {out}/after-false 2>&1
"""


def _cron_running() -> bool:
    return subprocess.run(["pgrep", "-x", "cron"], capture_output=True).returncode == 0


@pytest.fixture
def cron_daemon() -> Iterator[None]:
    assert CRON.exists(), f"{CRON} is missing: apt-get install cron"
    process = None
    if not _cron_running():
        # As init would start it: an almost empty environment.
        process = subprocess.Popen(
            [str(CRON), "-f"],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        yield
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)


def _records(out: Path) -> dict[str, str]:
    records = {}
    for path in sorted(out.iterdir()):
        lines = path.read_text(encoding="utf-8").splitlines()
        # PATH gains the daemon's own bin dir at its end (for `runyard output`)
        # and runs carry RUNYARD_* variables: the rest must be cron's exactly.
        kept = [_without_runyard_dir(line) for line in lines if not line.startswith("RUNYARD_")]
        records[path.name] = "\n".join(kept)
    return records


def _without_runyard_dir(line: str) -> str:
    if not line.startswith("PATH="):
        return line
    # The daemon's `runyard` lives next to its interpreter, the one running here.
    own = str(Path(sys.executable).parent)
    return "PATH=" + ":".join(part for part in line[5:].split(":") if part != own)


@pytest.mark.timeout(300)
def test_imported_tasks_do_what_cron_did(tmp_path: Path, cron_daemon: None) -> None:
    out = tmp_path / "out"
    out.mkdir()
    crontab = CRAFTED.format(out=out)
    name = f"runyard_test_{secrets.token_hex(4)}"  # cron.d ignores names with dots
    installed = CRON_D / name
    installed.write_text(crontab, encoding="utf-8")
    installed.chmod(0o644)
    try:
        deadline = time.monotonic() + 150  # cron reads cron.d at the next minute
        while len(list(out.iterdir())) < 3:
            assert time.monotonic() < deadline, f"cron ran {list(out.iterdir())} only"
            time.sleep(1)
        time.sleep(1)  # let the last job finish writing
    finally:
        installed.unlink()
    by_cron = _records(out)
    for path in out.iterdir():
        path.unlink()

    source = tmp_path / "crontab"
    source.write_text(crontab, encoding="utf-8")
    config = tmp_path / "runyard.toml"
    imported = run_cli("import", "cron", str(source), "--system", "--write", str(config),
                       env=cli_env())  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stderr.strip() == f"wrote 3 tasks to {config}"
    port = free_port()
    text = config.read_text(encoding="utf-8")
    config.write_text(
        f'[daemon]\nport = {port}\ndata_dir = "{tmp_path / "data"}"\n\n{text}', encoding="utf-8"
    )
    env = cli_env(RUNYARD_TOKEN=TEST_TOKEN)
    log = tmp_path / "daemon.log"
    process, _url = start_daemon(config, env, log, port)
    try:
        tasks = run_cli("--config", str(config), "tasks", "--json", env=env)
        assert tasks.returncode == 0, tasks.stderr
        names = [task["name"] for task in json.loads(tasks.stdout)["tasks"]]
        assert len(names) == 3
        for task in names:
            ran = run_cli("--config", str(config), "run", task, "--wait", env=env)
            # `false; ...` ends with the last command's status, as under cron.
            assert ran.returncode == 0, ran.stdout + ran.stderr
    finally:
        stop_daemon(process, log)
    by_runyard = _records(out)
    assert set(by_runyard) == {"plain", "input", "after-false"}
    assert by_runyard == by_cron
    # What the records hold, so the comparison above compares something.
    assert "GREETING=hello from cron" in by_cron["plain"]
    assert "cwd=/root" in by_cron["plain"] and "cwd=/tmp" in by_cron["after-false"]
    assert by_cron["input"].endswith("stdin:\none\ntwo 100% sure")


def test_debians_own_cron_files_import_and_validate(tmp_path: Path) -> None:
    files = [Path("/etc/crontab"), *sorted(CRON_D.iterdir())]
    files = [path for path in files if path.is_file() and not path.name.startswith(".")]
    assert Path("/etc/crontab") in files, "apt-get install cron installs /etc/crontab"
    for path in files:
        config = tmp_path / f"{path.name}.toml"
        imported = run_cli("import", "cron", str(path), "--write", str(config), env=cli_env())
        assert imported.returncode == 0, imported.stderr
        validated = run_cli("--config", str(config), "validate", env=cli_env())
        assert validated.returncode == 0, validated.stdout + validated.stderr
        jobs = [
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#") and "=" not in line.split()[0]
        ]
        text = config.read_text(encoding="utf-8")
        # Every job is a task or a listed line: none vanish.
        listed = text.count("\n#   line ")
        tasks = text.count("\nrun = ") + text.count('\nrun = """')
        assert tasks + listed >= len(jobs), (path, text)


def test_write_refuses_to_replace_a_file_without_force(tmp_path: Path) -> None:
    source = tmp_path / "crontab"
    source.write_text("0 1 * * * echo hi\n", encoding="utf-8")
    config = tmp_path / "runyard.toml"
    config.write_text("# mine\n", encoding="utf-8")
    refused = run_cli("import", "cron", str(source), "--write", str(config), env=cli_env())
    assert refused.returncode == 1
    assert f"{config} exists; add --force to replace it" in refused.stderr
    assert config.read_text(encoding="utf-8") == "# mine\n"
    forced = run_cli(
        "import", "cron", str(source), "--write", str(config), "--force", env=cli_env()
    )
    assert forced.returncode == 0, forced.stderr
    assert "[tasks.echo]" in config.read_text(encoding="utf-8")


def test_standard_input_and_a_missing_file(tmp_path: Path) -> None:
    piped = subprocess.run(
        [*_runyard(), "import", "cron", "-"],
        input="@reboot /srv/start\nMAILTO=a@b\n",
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert "run_on_start = true" in piped.stdout
    assert "line 2 not translated: MAILTO" in piped.stderr
    missing = run_cli("import", "cron", str(tmp_path / "nope"), env=cli_env())
    assert missing.returncode == 1
    assert f"cannot read {tmp_path / 'nope'}" in missing.stderr


def _runyard() -> list[str]:
    return [sys.executable, "-m", "runyard"]
