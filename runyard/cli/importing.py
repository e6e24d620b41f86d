"""`runyard import ...`: turn other schedulers' files into runyard.toml."""

from __future__ import annotations

import configparser
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from runyard.importers.common import Imported

app = typer.Typer(
    name="import",
    help="Translate a crontab, systemd timers or supervisord programs into runyard.toml.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

WriteOption = Annotated[
    Path | None,
    typer.Option("--write", metavar="PATH", help="Write the config to PATH, not stdout."),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Let --write replace a file.")]
SYSTEM_CRONTAB = Path("/etc/crontab")
CRON_D = Path("/etc/cron.d")


def _home_of(user: str) -> str | None:
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return None


def _read_source(source: str | None) -> tuple[str, str]:
    """Return (text, how to name it): a file, `-` for stdin, or the user's `crontab -l`."""
    if source == "-":
        return sys.stdin.read(), "standard input"
    if source is not None:
        path = Path(source)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as error:
            typer.echo(f"runyard import cron: cannot read {path}: {error}", err=True)
            raise typer.Exit(1) from None
    try:
        listed = subprocess.run(
            ["crontab", "-l"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as error:
        typer.echo(
            f"runyard import cron: no FILE given and `crontab -l` cannot run ({error}); "
            "name a crontab file, or - for standard input",
            err=True,
        )
        raise typer.Exit(1) from None
    if listed.returncode != 0:
        said = listed.stderr.strip()
        if said.startswith("no crontab for "):
            # Nothing to import is not a failure: the config says so.
            typer.echo(f"runyard import cron: {said}", err=True)
            return "", "crontab -l"
        typer.echo(f"runyard import cron: `crontab -l` failed: {said}", err=True)
        raise typer.Exit(1)
    return listed.stdout, "crontab -l"


def _is_system_file(source: str | None) -> bool:
    if source in (None, "-"):
        return False
    path = Path(source).absolute()
    return path == SYSTEM_CRONTAB or path.parent == CRON_D


def _config_problems(text: str, at: Path) -> list[str]:
    from runyard.config.loader import parse_config_text
    from runyard.exceptions import ConfigError

    try:
        parse_config_text(text, at, environ={})
    except ConfigError as error:
        return list(error.problems)
    return []


@app.command()
def cron(
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="[FILE|-]",
            help="A crontab file, or - for standard input; default: your `crontab -l`.",
            show_default=False,
        ),
    ] = None,
    write: WriteOption = None,
    force: ForceOption = False,
    system: Annotated[
        bool | None,
        typer.Option(
            "--system/--user-crontab",
            help="Whether lines carry a user field after the schedule. "
            "Default: yes for /etc/crontab and /etc/cron.d/*, no otherwise.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Translate a crontab into runyard.toml: schedules, environment, working directory.

    Every line that cannot be translated is listed on stderr (and at the top
    of the config) with the reason.
    """
    from runyard.importers.cron import import_crontab

    _refuse_to_overwrite(write, force, "cron")
    text, shown = _read_source(source)
    is_system = _is_system_file(source) if system is None else system
    prefix = ""
    if source not in (None, "-") and Path(source).absolute().parent == CRON_D:
        prefix = Path(source).name  # /etc/cron.d/e2scrub_all -> e2scrub_all, -2, ...
    user = pwd.getpwuid(os.geteuid()).pw_name
    result = import_crontab(text, system=is_system, user=user, home_of=_home_of, name_prefix=prefix)
    _emit(result, shown, write, "cron")


def _refuse_to_overwrite(write: Path | None, force: bool, kind: str) -> None:
    if write is not None and write.exists() and not force:
        typer.echo(f"runyard import {kind}: {write} exists; add --force to replace it", err=True)
        raise typer.Exit(1)


def _emit(result: Imported, shown: str, write: Path | None, kind: str) -> None:
    """Check each task with runyard's own config check, then print or write the config."""
    from runyard.importers.common import keep_valid, render_config

    at = (write or Path("runyard.toml")).absolute()
    keep_valid(result, lambda config: _config_problems(config, at))
    rendered = render_config(result, shown, f"import {kind}")
    for skipped in result.skipped:
        where = f"line {skipped.line} " if skipped.line else ""
        typer.echo(
            f"runyard import {kind}: {where}not translated: {skipped.reason}\n"
            f"    {skipped.text.strip()}",
            err=True,
        )
    if write is None:
        sys.stdout.write(rendered)
        return
    try:
        write.write_text(rendered, encoding="utf-8")
    except OSError as error:
        typer.echo(f"runyard import {kind}: cannot write {write}: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {result.counted()} to {write}", err=True)


# Where a timer's service is looked for when it is not beside the timer.
UNIT_DIRS = (
    Path("/etc/systemd/system"),
    Path("/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
)


@app.command()
def systemd(
    timers: Annotated[
        list[Path],
        typer.Argument(metavar="UNIT.timer...", help="Timer unit files.", show_default=False),
    ],
    write: WriteOption = None,
    force: ForceOption = False,
) -> None:
    """Translate systemd timers, and the services they start, into runyard.toml.

    OnCalendar= becomes the cron schedule where cron can express it; anything
    that cannot be translated is listed on stderr (and at the top of the
    config) with the reason.
    """
    from runyard.importers.systemd import Unit, import_timers, parse_unit

    _refuse_to_overwrite(write, force, "systemd")
    units: list[Unit] = []
    services: dict[str, Unit | None] = {}
    for path in timers:
        if path.suffix != ".timer":
            typer.echo(f"runyard import systemd: {path} is not a .timer unit", err=True)
            raise typer.Exit(1)
        timer = parse_unit(path.name, _read_unit(path))
        units.append(timer)
        target = timer.last("Timer", "Unit") or path.stem + ".service"
        for folder in (path.parent, *UNIT_DIRS):
            candidate = folder / target
            if candidate.is_file():
                services[target] = parse_unit(target, _read_unit(candidate))
                break
        else:
            services.setdefault(target, None)
    me = pwd.getpwuid(os.geteuid())
    result = import_timers(
        units,
        services,
        user=me.pw_name,
        is_user=lambda name: name in (me.pw_name, str(me.pw_uid)),
        home=me.pw_dir,
    )
    _emit(result, ", ".join(str(path) for path in timers), write, "systemd")


def _read_unit(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        typer.echo(f"runyard import systemd: cannot read {path}: {error}", err=True)
        raise typer.Exit(1) from None


@app.command()
def supervisord(
    config: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="supervisord.conf (its [include] files too).", show_default=False
        ),
    ],
    write: WriteOption = None,
    force: ForceOption = False,
) -> None:
    """Translate supervisord's programs into runyard services.

    Each [program:x] becomes [services.x]; what has no runyard form is listed
    on stderr (and at the top of the config) with the reason.
    """
    from runyard.importers.supervisord import import_supervisord

    _refuse_to_overwrite(write, force, "supervisord")
    try:
        config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        typer.echo(f"runyard import supervisord: cannot read {config}: {error}", err=True)
        raise typer.Exit(1) from None
    me = pwd.getpwuid(os.geteuid()).pw_name
    try:
        result = import_supervisord(config, daemon_user=me)
    except configparser.Error as error:
        typer.echo(f"runyard import supervisord: {config}: {error}", err=True)
        raise typer.Exit(1) from None
    _emit(result, str(config), write, "supervisord")
