"""`runyard service install|uninstall|status`: start runyard at boot with systemd."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from runyard.cli.options import options_of

app = typer.Typer(
    name="service",
    help="Install runyard as a systemd service for the current config.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

UserOption = Annotated[
    bool,
    typer.Option("--user", help="A unit of your own systemd user manager, not a system unit."),
]
SYSTEMD_RUNNING = Path("/run/systemd/system")  # exists only when systemd is PID 1
ENV_FILE = "service.env"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"runyard service: {message}", err=True)
    return typer.Exit(1)


def _config_home(environ: Mapping[str, str]) -> Path:
    """$XDG_CONFIG_HOME, else ~/.config: where systemd looks for a user's units."""
    if environ.get("XDG_CONFIG_HOME"):
        return Path(environ["XDG_CONFIG_HOME"])
    home = environ.get("HOME") or pwd.getpwuid(os.geteuid()).pw_dir
    return Path(home) / ".config"


def _systemctl(user_unit: bool, *args: str) -> subprocess.CompletedProcess[str] | None:
    """Run systemctl when systemd manages this machine; None when it does not."""
    if not SYSTEMD_RUNNING.is_dir() or shutil.which("systemctl") is None:
        return None
    argv = ["systemctl", *(["--user"] if user_unit else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _runyard_command() -> Path:
    # The script next to this interpreter: the one `make run` and pip install.
    candidate = Path(sys.executable).parent / "runyard"
    found = candidate if candidate.is_file() else shutil.which("runyard")
    if found is None:
        raise _fail("cannot find the runyard command next to this Python or on PATH")
    return Path(found).absolute()


@app.command()
def install(
    ctx: typer.Context,
    user: UserOption = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the unit; write and start nothing.")
    ] = False,
) -> None:
    """Write a systemd unit that serves the current config, then enable and start it."""
    from runyard.config.loader import Config
    from runyard.exceptions import ConfigError
    from runyard.systemd_unit import UnitSpec, render_unit, unit_path

    options = options_of(ctx)
    try:
        config: Config = options.load_config()
    except ConfigError as error:
        raise _fail(f"the config must be valid first:\n{error}") from None
    except OSError as error:
        raise _fail(str(error)) from None
    environ = options.environ
    database_url = environ.get("RUNYARD_DATABASE_URL")
    env_file = config.daemon.data_dir / ENV_FILE if database_url else None
    spec = UnitSpec(
        command=_runyard_command(),
        config=config.path,
        data_dir=Path(options.data_dir).absolute() if options.data_dir else None,
        working_dir=config.path.parent,
        shutdown_timeout=config.daemon.shutdown_timeout,
        path=environ.get("PATH", os.defpath),
        user=None if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name,
        user_unit=user,
        environment_file=env_file,
    )
    text = render_unit(spec)
    if dry_run:
        sys.stdout.write(text)
        return
    target = unit_path(user, _config_home(options_of(ctx).environ))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if env_file is not None:
            # The database URL may hold a password: not in the world-readable unit.
            env_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(f"RUNYARD_DATABASE_URL={database_url}\n")
        target.write_text(text, encoding="utf-8")
    except OSError as error:
        hint = "" if user else " (a system unit needs root; --user installs your own)"
        raise _fail(f"cannot write {target}: {error}{hint}") from None
    typer.echo(f"wrote {target}")
    reloaded = _systemctl(user, "daemon-reload")
    if reloaded is None:
        manager = "systemctl --user" if user else "systemctl"
        typer.echo(
            "systemd is not running on this machine; where it is, start the service with:\n"
            f"    {manager} daemon-reload && {manager} enable --now runyard"
        )
        return
    started = _systemctl(user, "enable", "--now", "runyard")
    if reloaded.returncode != 0 or (started is not None and started.returncode != 0):
        said = (reloaded.stderr + (started.stderr if started else "")).strip()
        raise _fail(f"systemctl refused: {said}")
    typer.echo("enabled and started runyard.service")


@app.command()
def uninstall(ctx: typer.Context, user: UserOption = False) -> None:
    """Stop and disable the service, and remove its unit."""
    from runyard.systemd_unit import unit_path

    options_of(ctx)
    target = unit_path(user, _config_home(options_of(ctx).environ))
    if not target.exists():
        raise _fail(f"no unit at {target}: nothing to uninstall")
    _systemctl(user, "disable", "--now", "runyard")
    try:
        target.unlink()
    except OSError as error:
        raise _fail(f"cannot remove {target}: {error}") from None
    _systemctl(user, "daemon-reload")
    typer.echo(f"removed {target}")


@app.command()
def status(ctx: typer.Context, user: UserOption = False) -> None:
    """Say whether the unit is installed and, under systemd, whether it runs."""
    from runyard.systemd_unit import unit_path

    options_of(ctx)
    target = unit_path(user, _config_home(options_of(ctx).environ))
    if not target.exists():
        typer.echo(f"not installed ({target} does not exist)")
        raise typer.Exit(3)
    typer.echo(f"installed: {target}")
    shown = _systemctl(user, "status", "--no-pager", "runyard")
    if shown is None:
        typer.echo("systemd is not running on this machine: the unit is not active here")
        raise typer.Exit(3)
    typer.echo(shown.stdout.rstrip())
    raise typer.Exit(shown.returncode)
