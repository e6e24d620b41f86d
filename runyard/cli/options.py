"""The global options, and how they pick the config, the daemon URL and the token."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runyard.cli.client import CliError, DaemonClient
from runyard.config.checks import Problems, absolute_path
from runyard.config.loader import (
    DATA_DIR_ENV,
    Config,
    DaemonSettings,
    _parse_daemon,
    load_config,
    resolve_config_path,
)
from runyard.exceptions import ConfigError

URL_ENV = "RUNYARD_URL"
TOKEN_ENV = "RUNYARD_TOKEN"
# Listening on every interface still answers on loopback, which is what a local client wants.
_WILDCARD_HOSTS = {"0.0.0.0", "::", "[::]", ""}


@dataclass(frozen=True)
class GlobalOptions:
    """What the callback received, shared by every command."""

    config: str | None = None
    data_dir: str | None = None
    url: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def config_path(self) -> Path:
        return resolve_config_path(self.config, self.environ)

    def load_config(self) -> Config:
        """Read and check the config; raise ConfigError listing every problem."""
        return load_config(self.config_path(), self.environ, self.data_dir)

    def daemon_settings(self) -> DaemonSettings:
        """Return the [daemon] settings: where the daemon listens and keeps its token.

        A config that is broken elsewhere (a task, say) still tells where the
        daemon is, so `runyard reload` can hear the daemon refuse it; when even
        [daemon] cannot be read, raise the full ConfigError.
        """
        try:
            return self.load_config().daemon
        except ConfigError:
            settings = _daemon_section(self.config_path(), self.environ, self.data_dir)
            if settings is None:
                raise
            return settings

    def client(self) -> DaemonClient:
        """Return a client for the daemon, reading the config only when it is needed."""
        url = self.url or self.environ.get(URL_ENV) or None
        token = self.environ.get(TOKEN_ENV) or None
        chosen_dir = self.data_dir or self.environ.get(DATA_DIR_ENV)
        data_dir = absolute_path(Path.cwd(), chosen_dir) if chosen_dir else None
        if url is None or (token is None and data_dir is None):
            daemon = self.daemon_settings()
            data_dir = daemon.data_dir
            if url is None:
                url = daemon_url(daemon.host, daemon.port)
        token_path = token_file(data_dir) if data_dir is not None else None
        if token is None and token_path is not None:
            token = read_token(token_path)
        hint = f"{TOKEN_ENV} or {token_path if token_path else '<data_dir>/token'}"
        return DaemonClient(url, token, hint)


def _daemon_section(
    path: Path, environ: Mapping[str, str], data_dir: str | None
) -> DaemonSettings | None:
    """Return the file's [daemon] settings alone, or None if they cannot be read."""
    try:
        document = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    base_dir = absolute_path(Path.cwd(), str(path)).parent
    return _parse_daemon(document.get("daemon", {}), base_dir, environ, data_dir, Problems())


def daemon_url(host: str, port: int) -> str:
    """Return the base URL a local client uses for a daemon listening on host:port."""
    host = host.strip()
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name
    return f"http://{host}:{port}"


def token_file(data_dir: Path) -> Path:
    # runyard.app pulls in the engine and the store; only the file name is needed here.
    from runyard.app import TOKEN_FILE

    return data_dir / TOKEN_FILE


def read_token(path: Path) -> str | None:
    """Return the token the daemon wrote, or None when there is none (never create it)."""
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
