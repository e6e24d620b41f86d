"""`runyard keys`: create, list and revoke the API keys of the v3 accounts.

The commands ask the daemon (`/api/keys`) when it answers. When none does,
they work on its database directly, but only on one that already exists: a
mistyped path must never leave a fresh, empty database behind.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from runyard.cli.client import CliError, DaemonClient, DaemonProblem, DaemonUnreachable
from runyard.cli.failures import error_line
from runyard.cli.options import GlobalOptions, JsonOption, options_of
from runyard.cli.render import make_console, print_json, when
from runyard.cli.text import Table, Text
from runyard.clock import utc_now

if TYPE_CHECKING:
    from runyard.api_keys import KeyAdmin
    from runyard.domain.accounts import ApiKey

T = TypeVar("T")
KeyJson = dict[str, Any]

app = typer.Typer(
    name="keys",
    help="Create, list and revoke the API keys of the v3 accounts.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _through_daemon_or_database(
    options: GlobalOptions,
    remote: Callable[[DaemonClient], T],
    local: Callable[[KeyAdmin], T],
) -> T:
    """Ask the daemon; when none answers, work on its existing database directly."""
    with options.client() as client:
        try:
            return remote(client)
        except DaemonUnreachable as unreachable:
            reason = unreachable.message
    with _database(options, reason) as admin:
        return local(admin)


@contextlib.contextmanager
def _database(options: GlobalOptions, no_daemon: str) -> Iterator[KeyAdmin]:
    config = options.load_config()
    # Imported here: SQLAlchemy and the migrations are only needed without a daemon.
    from sqlalchemy.engine import make_url

    from runyard.api_keys import KeyAdmin
    from runyard.store import RunStore, database_url
    from runyard.store.keys import KeyStore

    url = database_url(config.daemon.data_dir, options.environ)
    parsed = make_url(url)
    where = f"data dir {config.daemon.data_dir} ({config.daemon.data_dir_source})"
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not database or not os.path.isfile(database):
            raise CliError(
                f"{no_daemon}; and there is no database at {database} ({where}) to work on "
                "directly. Start the daemon first (`runyard serve`), or point --config or "
                "--data-dir at the daemon's data dir."
            )
        shown = database
    else:
        shown = parsed.render_as_string(hide_password=True)
    error_line(f"no daemon answered; working on the database {shown} directly")
    store = RunStore.open(url)
    try:
        yield KeyAdmin(
            KeyStore(store._transaction),
            accounts=lambda: config.accounts,
            config_path=lambda: config.path,
            data_dir=config.daemon.data_dir,
        )
    finally:
        store.close()


@app.command()
def create(
    ctx: typer.Context,
    account: Annotated[
        str, typer.Option("--account", metavar="ID", help="Account the key belongs to")
    ],
    label: Annotated[
        str, typer.Option("--label", metavar="TEXT", help="What the key is for, to tell keys apart")
    ] = "",
    as_json: JsonOption = False,
) -> None:
    """Create a key and print it once, alone on stdout; only its hash is stored."""

    def remote(client: DaemonClient) -> KeyJson:
        try:
            _status, body = client.request(
                "POST", "/api/keys", body={"account": account, "label": label}
            )
        except DaemonProblem as problem:
            raise _account_refused(problem) from None
        return dict(body)

    def local(admin: KeyAdmin) -> KeyJson:
        from runyard.exceptions import InvalidInput

        try:
            key, plaintext = admin.create(account, label, utc_now())
        except InvalidInput as error:
            raise CliError(error.message, exit_code=2) from None
        return {**key_json(key), "key": plaintext}

    created = _through_daemon_or_database(options_of(ctx), remote, local)
    if as_json:
        print_json(_without_schema(created))
        return
    # The key alone on stdout, so `KEY=$(runyard keys create ...)` works.
    sys.stdout.write(f"{created['key']}\n")
    sys.stdout.flush()
    sys.stderr.write(
        f"created key {created['id']} for account {created['account']}. "
        "This is the only time it is shown: runyard keeps only its hash.\n"
    )


def _account_refused(problem: DaemonProblem) -> CliError:
    """Report the daemon's 422 about the account as the one line it is, exit status 2."""
    errors = problem.body.get("errors") if isinstance(problem.body, dict) else None
    if problem.status == 422 and isinstance(errors, list) and errors:
        messages = [str(error.get("message")) for error in errors if isinstance(error, dict)]
        return CliError("; ".join(messages), exit_code=2)
    return problem


@app.command("list")
def list_keys(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List every key, revoked ones included, oldest first (never the keys themselves)."""

    def remote(client: DaemonClient) -> list[KeyJson]:
        return list(client.get("/api/keys").get("keys") or [])

    def local(admin: KeyAdmin) -> list[KeyJson]:
        return [key_json(key) for key in admin.list()]

    found = _through_daemon_or_database(options_of(ctx), remote, local)
    if as_json:
        print_json({"keys": [_without_schema(key) for key in found]})
        return
    console = make_console()
    if not found:
        console.print("no keys; create one with `runyard keys create --account ID`")
        return
    console.print(_keys_table(found, utc_now()))


@app.command()
def revoke(
    ctx: typer.Context,
    key_ref: Annotated[
        str,
        typer.Argument(metavar="KEY", help="The key's id (see `keys list`), or the key itself"),
    ],
    as_json: JsonOption = False,
) -> None:
    """Revoke a key: calls made with it are refused from now on."""
    from runyard.domain.accounts import key_id_in

    # A key names its own id: only the id is sent, never the key.
    key_id = key_id_in(key_ref) or key_ref.strip()

    def remote(client: DaemonClient) -> KeyJson:
        from urllib.parse import quote

        try:
            _status, body = client.request("POST", f"/api/keys/{quote(key_id, safe='')}/revoke")
        except DaemonProblem as problem:
            if problem.status == 404:
                raise _not_found(key_id) from None
            raise
        return dict(body)

    def local(admin: KeyAdmin) -> KeyJson:
        from runyard.exceptions import NotFound

        try:
            key, newly = admin.revoke(key_id, utc_now())
        except NotFound:
            raise _not_found(key_id) from None
        return {**key_json(key), "already_revoked": not newly}

    revoked = _through_daemon_or_database(options_of(ctx), remote, local)
    if as_json:
        print_json(_without_schema(revoked))
        return
    what = f"key {revoked['id']} of account {revoked['account']}"
    if revoked.get("already_revoked"):
        make_console().print(f"{what} was already revoked")
    else:
        make_console().print(f"revoked {what}")


def _not_found(key_id: str) -> CliError:
    return CliError(f"key {key_id!r} not found (`runyard keys list` shows the ids)")


def _timestamp(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def key_json(key: ApiKey) -> KeyJson:
    """Return a key as the daemon's `/api/keys` answers show it."""
    return {
        "id": key.id,
        "account": key.account,
        "label": key.label,
        "created_at": _timestamp(key.created_at),
        "revoked_at": _timestamp(key.revoked_at),
    }


def _without_schema(body: KeyJson) -> KeyJson:
    # The same JSON whether the daemon or the database answered.
    return {name: value for name, value in body.items() if name != "$schema"}


def _keys_table(keys: list[KeyJson], now: datetime) -> Table:
    table = Table()
    table.add_column("ID")
    table.add_column("ACCOUNT")
    table.add_column("LABEL", shrinks=True)
    table.add_column("CREATED")
    table.add_column("REVOKED")
    for key in keys:
        revoked = when(key.get("revoked_at"), now)
        table.add_row(
            Text(str(key.get("id"))),
            Text(str(key.get("account"))),
            Text(str(key.get("label") or "-")),
            when(key.get("created_at"), now),
            Text(revoked, style="yellow") if key.get("revoked_at") else Text(revoked),
        )
    return table
