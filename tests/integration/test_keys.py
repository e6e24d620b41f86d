"""KeyStore on SQLite and PostgreSQL: keys are stored hashed, listed, revoked, looked up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from runyard.domain.accounts import ApiKey, hash_secret, key_id_in
from runyard.exceptions import NotFound
from runyard.store import RunStore
from runyard.store.keys import KEY_PREFIX, KeyStore
from runyard.store.schema import api_keys

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def keys(store: RunStore) -> KeyStore:
    return KeyStore(store.transaction)


def test_create_returns_a_high_entropy_key_and_stores_only_its_hash(
    store: RunStore, keys: KeyStore
) -> None:
    key, plaintext = keys.create("acme", "ci pipeline", T0)
    # `ryk_<key id>_<secret>`; token_urlsafe(32): 43 characters of base64url, 256 random bits.
    assert plaintext.startswith(f"{KEY_PREFIX}{key.id}_")
    assert len(plaintext) == len(KEY_PREFIX) + 26 + 1 + 43
    assert key_id_in(plaintext) == key.id
    assert key == ApiKey(
        id=key.id, account="acme", label="ci pipeline", created_at=T0, revoked_at=None
    )
    assert len(key.id) == 26
    assert key.active
    with store.transaction() as connection:
        rows = connection.execute(sa.select(api_keys)).mappings().all()
    assert len(rows) == 1
    assert rows[0]["key_hash"] == hash_secret(plaintext)
    assert plaintext not in {str(value) for value in rows[0].values()}


def test_every_key_is_different(keys: KeyStore) -> None:
    created = [keys.create("acme", "", T0) for _ in range(20)]
    assert len({plaintext for _, plaintext in created}) == 20
    assert len({key.id for key, _ in created}) == 20


def test_list_is_oldest_first_with_revoked_keys(keys: KeyStore) -> None:
    assert keys.list() == []
    later, _ = keys.create("b", "later", T0 + timedelta(minutes=5))
    first, _ = keys.create("a", "first", T0)
    middle, _ = keys.create("a", "", T0 + timedelta(minutes=1))
    revoked = keys.revoke(middle.id, T0 + timedelta(minutes=10))
    assert keys.list() == [first, revoked, later]
    assert revoked.revoked_at == T0 + timedelta(minutes=10)


def test_lookup_finds_only_active_keys(keys: KeyStore) -> None:
    key, plaintext = keys.create("acme", "", T0)
    other, other_plaintext = keys.create("other", "", T0)
    assert keys.lookup(plaintext) == key
    assert keys.lookup(other_plaintext) == other
    assert keys.lookup(plaintext + "x") is None
    assert keys.lookup("") is None
    assert keys.lookup(hash_secret(plaintext)) is None  # the stored hash is not a key
    keys.revoke(key.id, T0 + timedelta(hours=1))
    assert keys.lookup(plaintext) is None
    assert keys.lookup(other_plaintext) == other


def test_revoking_twice_keeps_the_first_time(keys: KeyStore) -> None:
    key, _ = keys.create("acme", "", T0)
    first = keys.revoke(key.id, T0 + timedelta(hours=1))
    again = keys.revoke(key.id, T0 + timedelta(hours=2))
    assert first.revoked_at == again.revoked_at == T0 + timedelta(hours=1)
    assert not again.active


@pytest.mark.parametrize("key_id", ["01HZZZZZZZZZZZZZZZZZZZZZZZ", "", "x" * 100])
def test_revoking_an_unknown_key_raises_not_found(keys: KeyStore, key_id: str) -> None:
    keys.create("acme", "", T0)
    with pytest.raises(NotFound) as caught:
        keys.revoke(key_id, T0)
    assert (caught.value.kind, caught.value.key) == ("key", key_id)


def test_keys_survive_reopening(store_url: str) -> None:
    first = RunStore.open(store_url)
    try:
        key, plaintext = KeyStore(first.transaction).create("acme", "kept", T0)
    finally:
        first.close()
    second = RunStore.open(store_url)
    try:
        assert KeyStore(second.transaction).lookup(plaintext) == key
    finally:
        second.close()
