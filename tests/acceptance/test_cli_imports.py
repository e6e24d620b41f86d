"""A command that talks to the daemon imports only what it needs.

Every CLI call is a new interpreter, so what it imports is what it costs:
the store (SQLAlchemy, Alembic), the engine and the web stack belong to the
daemon, and a command that only asks the daemon must not load them. The
speed itself is measured by bench/cli.py; this holds the cause in place.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from runyard_harness import CLI_TIMEOUT, Daemon

# Modules the commands below must never load, with why they are heavy.
HEAVY = {
    "sqlalchemy": "the store",
    "alembic": "the store's migrations",
    "runyard.store": "the store",
    "runyard.engine": "processes and scheduling",
    "runyard.app": "the daemon's composition root",
    "fastapi": "the HTTP server",
    "uvicorn": "the HTTP server",
    "pydantic": "request bodies, and typer >= 0.28",
    "httpx": "an HTTP client heavier than http.client",
    "rich": "a rich-text library heavier than the CLI's tables",
    "cronsim": "the schedule parser, for validate and serve only",
}

# Run the CLI in-process, then write the names of the modules it loaded.
PROBE = """
import json, sys
out = sys.argv[2]
sys.argv = ["runyard", *json.loads(sys.argv[1])]
from runyard.cli.main import main
try:
    main()
finally:
    with open(out, "w") as handle:
        json.dump(sorted(sys.modules), handle)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["tasks"],
        ["runs", "--limit", "1"],
        ["run", "hello", "--wait"],
        ["keys", "list"],
    ],
    ids=["tasks", "runs", "run-wait", "keys-list"],
)
def test_daemon_commands_import_no_heavy_module(
    daemon: Daemon, tmp_path: Path, args: list[str]
) -> None:
    out = tmp_path / "modules.json"
    command = json.dumps(["--config", str(daemon.config), *args])
    done = subprocess.run(
        [sys.executable, "-c", PROBE, command, str(out)],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(out.read_text())
    assert "runyard.cli.main" in loaded  # the probe saw the command run
    heavy = {
        name: why
        for name, why in HEAVY.items()
        if any(module == name or module.startswith(f"{name}.") for module in loaded)
    }
    assert heavy == {}
