"""API keys of the v3 accounts: list, create, revoke (behind the daemon token)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import ConfigDict, Field

from runyard.api import schemas
from runyard.api.deps import RunyardDep, SchemaBase, schema_url
from runyard.api.errors import problem_responses
from runyard.api.params import StorableText
from runyard.app import Runyard
from runyard.domain.accounts import ApiKey
from runyard.store.keys import KeyStore
from runyard.v3.keys import KeyAdmin

router = APIRouter(tags=["keys"], responses=problem_responses(400, 401, 500))

KeyIdPath = Annotated[
    str,
    Path(
        alias="keyId",
        description="Key id (`GET /api/keys`)",
        min_length=1,
        max_length=100,
        json_schema_extra={"pattern": schemas.NO_NUL_PATTERN},
    ),
    StorableText,
]


class Key(schemas._Body):
    """An API key of a v3 account; the key itself is never shown again."""

    schema_: schemas.SchemaField = None
    id: str = Field(description="Key id, used to revoke it")
    account: str
    label: str
    created_at: schemas.UtcDateTime
    revoked_at: schemas.UtcDateTime | None = Field(description="null while the key is active")


class KeysResponseBody(schemas._Body):
    schema_: schemas.SchemaField = None
    keys: list[Key] = Field(description="Every key, revoked ones included, oldest first")


class CreateKeyRequest(schemas._Body):
    """Body of POST /api/keys."""

    model_config = ConfigDict(extra="forbid")
    account: str = Field(
        min_length=1, max_length=64, description="A v3 account declared in the config"
    )
    label: Annotated[str, StorableText] = Field(
        "",
        max_length=200,
        description="What the key is for",
        json_schema_extra={"pattern": schemas.NO_NUL_PATTERN},
    )


class CreatedKey(Key):
    key: str = Field(description="The key itself: shown in this answer only, never again")


class RevokedKey(Key):
    already_revoked: bool = Field(description="True when the key had been revoked before")


# Registered with the other bodies, so their `$schema` URLs resolve.
schemas.SCHEMAS.update(
    {
        model.__name__: model
        for model in (Key, KeysResponseBody, CreateKeyRequest, CreatedKey, RevokedKey)
    }
)


def key_admin(runyard: Runyard) -> KeyAdmin:
    """Return the key service over the daemon's store and its current config."""
    return KeyAdmin(
        KeyStore(runyard.store.transaction),
        accounts=lambda: runyard.config.accounts,
        config_path=lambda: runyard.config.path,
        data_dir=runyard.data_dir,
    )


def _fields(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "account": key.account,
        "label": key.label,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


@router.get("/api/keys", summary="List API keys")
async def list_keys(runyard: RunyardDep, base: SchemaBase) -> KeysResponseBody:
    """Return every key of the v3 accounts, revoked ones included, oldest first.

    Keys themselves are never returned: runyard keeps only their SHA-256 hash.
    """
    found = await asyncio.to_thread(key_admin(runyard).list)
    return KeysResponseBody(
        schema_=schema_url(base, "KeysResponseBody"),
        keys=[Key(schema_=schema_url(base, "Key"), **_fields(key)) for key in found],
    )


@router.post(
    "/api/keys",
    summary="Create an API key",
    status_code=201,
    responses=problem_responses(422),
)
async def create_key(body: CreateKeyRequest, runyard: RunyardDep, base: SchemaBase) -> CreatedKey:
    """Create a key for a v3 account; the answer carries the key, shown this once only."""
    now: datetime = runyard.clock()
    key, plaintext = await asyncio.to_thread(
        key_admin(runyard).create, body.account, body.label, now
    )
    return CreatedKey(
        schema_=schema_url(base, "CreatedKey"),
        key=plaintext,
        **_fields(key),
    )


@router.post(
    "/api/keys/{keyId}/revoke",
    summary="Revoke an API key",
    responses=problem_responses(404, 422),
)
async def revoke_key(key_id: KeyIdPath, runyard: RunyardDep, base: SchemaBase) -> RevokedKey:
    """Revoke a key: calls made with it are refused from now on.

    Revoking a revoked key changes nothing (it keeps its first `revoked_at`).
    """
    key, newly = await asyncio.to_thread(key_admin(runyard).revoke, key_id, runyard.clock())
    return RevokedKey(
        schema_=schema_url(base, "RevokedKey"),
        already_revoked=not newly,
        **_fields(key),
    )
