"""The global options, and how they pick the config, the daemon URL and the token.

The rule itself lives in `runyard.config.locate`; this module applies it for
a command and remembers which step chose what, so errors can say so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import typer

from runyard.cli.client import CliError, DaemonClient
from runyard.config.daemon import DaemonSettings, read_daemon_settings
from runyard.config.locate import (
    TOKEN_ENV,
    URL_ENV,
    Located,
    explicit_data_dir,
    find_config,
    token_file,
    token_from_environ,
)

if TYPE_CHECKING:
    from runyard.config.loader import Config

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print plain JSON for scripts instead of text")
]

# Listening on every interface still answers on loopback, which is what a local client wants.
_WILDCARD_HOSTS = {"0.0.0.0", "::", "[::]", ""}


@dataclass(frozen=True)
class DaemonTarget:
    """Which daemon a command talks to, with the token it presents, and how each was found."""

    url: str
    url_source: str
    token: str | None
    token_source: str  # where the token came from, or why there is none


@dataclass(frozen=True)
class GlobalOptions:
    """What the callback received, shared by every command."""

    config: str | None = None
    data_dir: str | None = None
    url: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def config_file(self) -> Located:
        return find_config(self.config, self.environ)

    def load_config(self) -> Config:
        """Read and check the whole config; raise ConfigError listing every problem."""
        # Imported here: the task checks and the cron parser are not needed to
        # talk to a daemon.
        from runyard.config.loader import load_config

        located = self.config_file()
        return load_config(located.path, self.environ, self.data_dir, source=located.source)

    def daemon_settings(self) -> DaemonSettings:
        """Return the [daemon] settings: where the daemon listens and keeps its data.

        Only that table is read, so a config broken elsewhere still tells where
        the daemon is (`runyard reload` then hears the daemon refuse the file).
        """
        return read_daemon_settings(self.config_file(), self.environ, self.data_dir)

    def target(self) -> DaemonTarget:
        """Return the daemon's URL and token, reading the config only when needed."""
        url, url_source = self._explicit_url()
        token = token_from_environ(self.environ)
        data_dir = explicit_data_dir(self.data_dir, self.environ)
        if url is None or (token is None and data_dir is None):
            daemon = self.daemon_settings()
            if data_dir is None:
                data_dir = Located(daemon.data_dir, daemon.data_dir_source)
            if url is None:
                url = daemon_url(daemon.host, daemon.port)
                url_source = f"[daemon] host and port in {self.config_file().path}"
        if token is not None:
            return DaemonTarget(url, url_source, token, f"${TOKEN_ENV}")
        assert data_dir is not None
        path = token_file(data_dir.path)
        found = read_token(path)
        if found is None:
            why = f"${TOKEN_ENV} is not set and {path} does not exist (data dir {data_dir})"
            return DaemonTarget(url, url_source, None, why)
        return DaemonTarget(url, url_source, found, f"the token in {path} (data dir {data_dir})")

    def client(self) -> DaemonClient:
        """Return a client for the daemon the rule points at."""
        target = self.target()
        return DaemonClient(
            target.url, target.token, target.token_source, url_source=target.url_source
        )

    def _explicit_url(self) -> tuple[str | None, str]:
        if self.url:
            return self.url, "--url"
        from_env = self.environ.get(URL_ENV)
        if from_env:
            return from_env, f"${URL_ENV}"
        return None, ""


def daemon_url(host: str, port: int) -> str:
    """Return the base URL a local client uses for a daemon listening on host:port."""
    import ipaddress  # only here: a module most commands never need

    host = host.strip()
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name
    return f"http://{host}:{port}"


def read_token(path: os.PathLike[str]) -> str | None:
    """Return the token the daemon wrote, or None when there is none (never create it)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"cannot read the token file {path}: {exc.strerror or exc}") from None


def options_of(ctx: typer.Context) -> GlobalOptions:
    """Return the global options the root command stored for this invocation."""
    options = ctx.find_root().obj
    assert isinstance(options, GlobalOptions)
    return options
