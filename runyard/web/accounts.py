"""The accounts page: each v3 account's usage and keys; create and revoke keys."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from runyard.api.routes_keys import key_admin
from runyard.exceptions import RunyardError
from runyard.store import dashboard as reads
from runyard.web.pages import (
    KeyIdPath,
    context,
    current_session,
    form_value,
    read_form,
    runyard_of,
    see_other,
)
from runyard.web.render import page

router = APIRouter(include_in_schema=False)


@router.get("/accounts")
async def accounts_page(request: Request) -> Response:
    """Each v3 account's usage, concurrency, queue and keys; create and revoke keys."""
    session = current_session(request)
    runyard = runyard_of(request)
    keys = await asyncio.to_thread(key_admin(runyard).list)
    used = await asyncio.to_thread(reads.key_last_used, runyard.store)
    accounts = []
    for account in runyard.config.accounts.values():
        usage = await runyard.cloud.account_runtime(account)
        running, queued = runyard.engine.account_counts(account.id)
        accounts.append(
            {
                "account": account,
                "usage": usage,
                "running": running,
                "queued": queued,
                "keys": [key for key in keys if key.account == account.id],
            }
        )
    orphans = [key for key in keys if key.account not in runyard.config.accounts]
    return page(
        request,
        "accounts.html",
        context(
            request, session, title="Accounts", accounts=accounts, orphans=orphans, last_used=used
        ),
    )


@router.post("/accounts/keys")
async def key_create(request: Request) -> Response:
    """Create a key; it is shown once, on the next page, with a copy button."""
    session = current_session(request)
    form = await read_form(request, session)
    runyard = runyard_of(request)
    account, label = form_value(form, "account"), form_value(form, "label")[:200]
    try:
        key, plaintext = await asyncio.to_thread(
            key_admin(runyard).create, account, label, runyard.clock()
        )
    except RunyardError as error:
        session.flashes.append(("error", f"No key created: {error}"))
        return see_other("/accounts")
    session.new_key = (key.account, plaintext)
    return see_other("/accounts")


@router.post("/accounts/keys/{keyId}/revoke")
async def key_revoke(request: Request, key_id: KeyIdPath) -> Response:
    """Revoke a key: calls made with it are refused from now on."""
    session = current_session(request)
    await read_form(request, session)
    runyard = runyard_of(request)
    try:
        key, newly = await asyncio.to_thread(key_admin(runyard).revoke, key_id, runyard.clock())
        session.flashes.append(
            ("ok", f"Key {key.id} revoked." if newly else f"Key {key.id} was already revoked.")
        )
    except RunyardError as error:
        session.flashes.append(("error", str(error)))
    return see_other("/accounts")
