"""`runyard keys`: create, list and revoke API keys, straight on the database.

No daemon is needed: the commands read the config for the accounts and the
data dir, and open the database the daemon uses.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from runyard.cli.client import CliError
from runyard.cli.options import GlobalOptions
from runyard.cli.render import make_console, print_json, short_time
from runyard.config.loader import Config
from runyard.domain.accounts import ApiKey
from runyard.exceptions import NotFound

if TYPE_CHECKING:
    from runyard.store.keys import KeyStore

app = typer.Typer(
    name="keys",
    help="Create, list and revoke the API keys of the v3 accounts (no daemon needed).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _options(ctx: typer.Context) -> GlobalOptions:
    options = ctx.find_root().obj
    assert isinstance(options, GlobalOptions)
    return options


@contextlib.contextmanager
def _key_store(config: Config, options: GlobalOptions) -> Iterator[KeyStore]:
    # Imported here: SQLAlchemy and the migrations are only needed by these commands.
    from runyard.store import RunStore, database_url
    from runyard.store.keys import KeyStore

    store = RunStore.open(database_url(config.daemon.data_dir, options.environ))
    try:
        yield KeyStore(store._transaction)
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
) -> None:
    """Create a key and print it once, alone on stdout; only its hash is stored."""
    options = _options(ctx)
    config = options.load_config()
    if account not in config.accounts:
        declared = ", ".join(config.accounts) or "none"
        raise CliError(
            f"account {account!r} is not declared in {config.path} (declared accounts: {declared})",
            exit_code=2,
        )
    with _key_store(config, options) as keys:
        key, plaintext = keys.create(account, label, datetime.now(UTC))
    # The key alone on stdout, so `KEY=$(runyard keys create ...)` works.
    sys.stdout.write(plaintext + "\n")
    sys.stdout.flush()
    sys.stderr.write(
        f"created key {key.id} for account {key.account}. "
        "This is the only time it is shown: runyard keeps only its hash.\n"
    )


@app.command("list")
def list_keys(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print plain JSON instead of a table")
    ] = False,
) -> None:
    """List every key, revoked ones included, oldest first (never the keys themselves)."""
    options = _options(ctx)
    config = options.load_config()
    with _key_store(config, options) as keys:
        found = keys.list()
    if as_json:
        print_json({"keys": [_key_json(key) for key in found]})
        return
    console = make_console()
    if not found:
        console.print("no keys; create one with `runyard keys create --account ID`")
        return
    console.print(_keys_table(found, datetime.now(UTC)))


@app.command()
def revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="Key id (see `keys list`)")],
) -> None:
    """Revoke a key: calls made with it are refused from now on."""
    options = _options(ctx)
    config = options.load_config()
    now = datetime.now(UTC)
    with _key_store(config, options) as keys:
        try:
            key = keys.revoke(key_id, now)
        except NotFound:
            raise CliError(
                f"key {key_id!r} not found (`runyard keys list` shows the ids)"
            ) from None
    from runyard.store.keys import mark_revoked

    mark_revoked(config.daemon.data_dir)
    if key.revoked_at != now:
        make_console().print(f"key {key.id} of account {key.account} was already revoked")
        return
    make_console().print(f"revoked key {key.id} of account {key.account}")


def _timestamp(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _key_json(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "account": key.account,
        "label": key.label,
        "created_at": _timestamp(key.created_at),
        "revoked_at": _timestamp(key.revoked_at),
    }


def _keys_table(keys: list[ApiKey], now: datetime) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("ACCOUNT", no_wrap=True)
    table.add_column("LABEL")
    table.add_column("CREATED", no_wrap=True)
    table.add_column("REVOKED", no_wrap=True)
    for key in keys:
        revoked = short_time(_timestamp(key.revoked_at), now)
        table.add_row(
            Text(key.id),
            Text(key.account),
            Text(key.label or "-"),
            short_time(_timestamp(key.created_at), now),
            Text(revoked, style="yellow") if key.revoked_at else Text(revoked),
        )
    return table
