"""The key log lines: the key's id, account and label, never the key."""

from __future__ import annotations

import logging

import pytest

from runyard.v3.keys import key_created, key_revoked


def test_key_lines_name_the_key_id_and_account(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="runyard.keys"):
        key_created("01KEY", "acme", "ci")
        key_revoked("01KEY", "acme")
    assert [record.getMessage() for record in caplog.records] == [
        "key 01KEY (ci) created for account acme",
        "key 01KEY of account acme revoked",
    ]
    assert caplog.records[0].name == "runyard.keys"
    assert (caplog.records[0].key_id, caplog.records[0].account) == ("01KEY", "acme")
