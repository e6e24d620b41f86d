"""`${VAR}` in config values, and `[daemon] include` of more task files."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.config.daemon import read_daemon_settings
from runyard.config.loader import load_config
from runyard.config.locate import Located
from runyard.exceptions import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ)
    return caught.value.problems


def test_values_take_the_daemons_environment(tmp_path: Path) -> None:
    config = write(
        tmp_path / "runyard.toml",
        '[daemon]\nexternal_url = "https://${DOMAIN}/runyard"\n'
        'data_dir = "${STATE:-/var/lib/runyard}"\n'
        '[tasks.backup]\nrun = "backup --to ${TARGET}"\nworking_dir = "${HOME}/work"\n'
        'env = { TOKEN = "${API_TOKEN}", LITERAL = "$${NOT_ME}", EMPTY = "${UNSET:-}" }\n',
    )
    environ = {"DOMAIN": "ops.example", "HOME": "/home/a", "API_TOKEN": "t0k"}
    loaded = load_config(config, environ)
    assert loaded.daemon.external_url == "https://ops.example/runyard"
    assert loaded.daemon.data_dir == Path("/var/lib/runyard")
    task = loaded.tasks["backup"]
    # The script is the shell's to expand when the run starts.
    assert task.run == "backup --to ${TARGET}"
    assert task.working_dir == "/home/a/work"
    assert dict(task.env) == {"TOKEN": "t0k", "LITERAL": "${NOT_ME}", "EMPTY": ""}


def test_a_services_scripts_are_the_shells_to_expand(tmp_path: Path) -> None:
    config = write(
        tmp_path / "runyard.toml",
        '[services.web]\nrun = "serve --port ${PORT}"\nworking_dir = "${HOME}"\n'
        '[services.web.health_check]\nrun = "curl -fsS localhost:${PORT}/health"\n',
    )
    loaded = load_config(config, {"HOME": "/home/a"})
    web = loaded.services["web"]
    assert web.run == "serve --port ${PORT}"
    assert web.working_dir == "/home/a"
    assert web.health_check is not None
    assert web.health_check.target == "curl -fsS localhost:${PORT}/health"


def test_a_missing_variable_names_the_key_and_the_fix(tmp_path: Path) -> None:
    config = write(
        tmp_path / "runyard.toml",
        '[tasks.a]\nrun = "x"\nenv = { KEY = "${SECRET_KEY}" }\ndescription = "${1bad}"\n'
        'success_exit_codes = [0]\ntimeout = "${TIMEOUT:-5m}"\n',
    )
    assert problems(config, {}) == [
        "tasks.a.env.KEY: ${SECRET_KEY} is not set in the daemon's environment "
        "(write ${SECRET_KEY:-default} for a fallback, or $${SECRET_KEY} for the text)",
        "tasks.a.description: ${1bad}: expected ${NAME} or ${NAME:-default}",
    ]


def test_the_cli_reads_the_daemon_table_the_same_way(tmp_path: Path) -> None:
    config = write(tmp_path / "runyard.toml", '[daemon]\nhost = "${BIND:-127.0.0.2}"\n')
    settings = read_daemon_settings(Located(config, "test"), {})
    assert settings.host == "127.0.0.2"


def test_included_files_add_tasks_relative_to_themselves(tmp_path: Path) -> None:
    config = write(
        tmp_path / "runyard.toml",
        '[daemon]\ninclude = ["tasks.d/*.toml", "extra.toml"]\n[tasks.main]\nrun = "m"\n',
    )
    write(tmp_path / "tasks.d" / "b.toml", '[tasks.web]\nrun = "w"\nworking_dir = "site"\n')
    write(tmp_path / "tasks.d" / "a.toml", '[tasks.api]\nrun = "a"\nenv = { U = "${USER_X}" }\n')
    write(tmp_path / "tasks.d" / "notes.txt", "not matched")
    write(tmp_path / "extra.toml", '[tasks.extra]\nrun = "e"\n')
    loaded = load_config(config, {"USER_X": "x"})
    assert list(loaded.tasks) == ["api", "extra", "main", "web"]
    assert loaded.tasks["web"].working_dir == str(tmp_path / "tasks.d" / "site")
    assert dict(loaded.tasks["api"].env) == {"U": "x"}


def test_a_task_defined_twice_names_both_files(tmp_path: Path) -> None:
    config = write(
        tmp_path / "runyard.toml", '[daemon]\ninclude = ["d/*.toml"]\n[tasks.web]\nrun = "1"\n'
    )
    write(tmp_path / "d" / "a.toml", '[tasks.api]\nrun = "2"\n[tasks.web]\nrun = "3"\n')
    write(tmp_path / "d" / "b.toml", '[tasks.api]\nrun = "4"\n')
    assert problems(config, {}) == [
        "tasks.web: defined in both the config file and d/a.toml",
        "tasks.api: defined in both d/a.toml and d/b.toml",
    ]


def test_an_included_file_holds_tasks_only_and_its_problems_name_it(tmp_path: Path) -> None:
    config = write(tmp_path / "runyard.toml", '[daemon]\ninclude = ["d/*.toml", "none/*.toml"]\n')
    write(
        tmp_path / "d" / "a.toml", '[daemon]\nport = 1\n[tasks.x]\nrun = "x"\ncron = "61 * * * *"\n'
    )
    write(tmp_path / "d" / "b.toml", "[tasks.y\n")
    found = problems(config, {})
    assert len(found) == 3, found
    assert "d/a.toml: daemon: an included file holds [tasks.<name>] tables only" in found
    assert any(p.startswith("d/a.toml: tasks.x.cron: minute field: 61 is out") for p in found)
    assert any(p.startswith("d/b.toml: TOML syntax error at line 1") for p in found)


def test_a_pattern_that_matches_nothing_is_a_warning(tmp_path: Path) -> None:
    config = write(tmp_path / "runyard.toml", '[daemon]\ninclude = ["later/*.toml"]\n')
    loaded = load_config(config, {})
    assert loaded.warnings == ("daemon.include[0]: 'later/*.toml' matches no file",)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('"tasks.d/*.toml"', "daemon.include: expected a list of file patterns, got string"),
        ('[""]', "daemon.include[0]: must not be empty"),
        ("[1]", "daemon.include[0]: expected a string, got integer 1"),
    ],
)
def test_a_bad_include_is_named(tmp_path: Path, value: str, problem: str) -> None:
    config = write(tmp_path / "runyard.toml", f"[daemon]\ninclude = {value}\n")
    assert problem in "\n".join(problems(config, {}))
