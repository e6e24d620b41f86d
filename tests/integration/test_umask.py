"""`umask` per task: the files a run creates get the mode it asks for."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from runyard.api.app import create_app
from runyard.app import Runyard
from runyard.config.loader import load_config, parse_config_text
from runyard.exceptions import ConfigError


def test_each_run_creates_files_under_its_tasks_umask(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    config = tmp_path / "runyard.toml"
    config.write_text(
        f'[daemon]\ndata_dir = "data"\n'
        f'[tasks.private]\nrun = "touch {out}/private"\numask = "077"\n'
        f'[tasks.shared]\nrun = "touch {out}/shared"\numask = "0002"\n'
        f'[tasks.default]\nrun = "touch {out}/default"\n',
        encoding="utf-8",
    )
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    runyard = Runyard(load_config(config, environ=environ), environ=environ)
    with TestClient(create_app(runyard)) as client:
        client.headers["Authorization"] = f"Bearer {runyard.token}"
        for task in ("private", "shared", "default"):
            answer = client.post(f"/api/tasks/{task}/run", params={"wait": "true"})
            assert answer.json()["end_reason"] == "success", answer.text
    daemon_umask = os.umask(0)
    os.umask(daemon_umask)
    mode = {path.name: stat.S_IMODE(path.stat().st_mode) for path in out.iterdir()}
    assert mode == {"private": 0o600, "shared": 0o664, "default": 0o666 & ~daemon_umask}


@pytest.mark.parametrize("value", ['"0888"', '"rw-r--r--"', "22", '""'])
def test_a_bad_umask_is_named(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(f'[tasks.t]\nrun = "x"\numask = {value}\n', Path("/r.toml"), {})
    assert 'tasks.t.umask: expected octal digits like "022" or "0027"' in str(caught.value)
