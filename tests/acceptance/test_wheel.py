"""The package as a user gets it: a wheel, installed in a fresh virtualenv, serves the example.

Everything the daemon reads at run time (migrations, the example config, the
viewer's and dashboard's files, the docs assets) must be inside the wheel;
this catches a file that works from the source tree only. pip fetches the
dependencies from the package index (or its cache).
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest
from runyard_harness import TEST_TOKEN, cli_env, free_port, start_daemon, stop_daemon

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "runyard" / "examples" / "runyard.toml"


@pytest.mark.timeout(600)
def test_the_wheel_installs_in_a_fresh_venv_and_serves_the_example(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = dist.glob("runyard-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    # Nothing of this checkout's environment may point Python at the source tree.
    clean = {k: v for k, v in cli_env().items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    python = env_dir / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=500,
        env=clean,
    )
    assert installed.returncode == 0, installed.stderr
    # The installed package, not the source tree: run from elsewhere.
    where = subprocess.run(
        [str(python), "-c", "import runyard; print(runyard.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env=clean,
    )
    assert str(env_dir) in where.stdout, where.stdout + where.stderr

    port = free_port()
    config = tmp_path / "runyard.toml"
    text = EXAMPLE.read_text(encoding="utf-8").replace("port = 9477", f"port = {port}")
    config.write_text(text, encoding="utf-8")
    env = {**clean, "RUNYARD_TOKEN": TEST_TOKEN}
    log = tmp_path / "daemon.log"
    process, url = start_daemon(config, env, log, port, command=[str(env_dir / "bin" / "runyard")])
    try:
        auth = {"Authorization": f"Bearer {TEST_TOKEN}"}
        tasks = httpx.get(f"{url}/api/tasks", headers=auth, timeout=10)
        assert tasks.status_code == 200, tasks.text
        assert "hello" in {task["name"] for task in tasks.json()["tasks"]}
        ran = httpx.post(f"{url}/api/tasks/hello/run?wait=true", headers=auth, timeout=60)
        assert ran.json()["end_reason"] == "success", ran.text
        # The dashboard's templates render (the sign-in page) and its assets are served.
        dashboard = ("/login", "/ui/static/dashboard.js", "/ui/static/log.js")
        for path in ("/docs", "/view/static/viewer.js", "/ui/static/dashboard.css", *dashboard):
            assert httpx.get(f"{url}{path}", timeout=10).status_code == 200, path
    finally:
        stop_daemon(process, log)
