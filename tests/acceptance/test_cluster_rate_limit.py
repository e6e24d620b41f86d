"""A v3 key's rate limit holds across nodes: two real daemons on one PostgreSQL.

The key's calls alternate between the two nodes; each node alone has seen
only half of them when the key's limit is reached, and still answers 429.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from test_cluster import Node, database  # noqa: F401 - database is a fixture

pytestmark = pytest.mark.postgres

LIMIT = 6
RATE_LIMITED = "Rate limit exceeded. Try again in a few seconds."

LIMITED_ACCOUNT = """
[accounts.acme]
tasks = ["sleepy"]
rate_limit_per_minute = {limit}
"""


def test_a_key_s_calls_spread_over_two_nodes_are_refused_past_its_limit(
    tmp_path: Path,
    database: str,  # noqa: F811 - the fixture above
) -> None:
    extra = LIMITED_ACCOUNT.format(limit=LIMIT)
    nodes = [Node(tmp_path, name, database, extra=extra) for name in ("alpha", "bravo")]
    try:
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_until_up()
        key = nodes[0].create_key("acme")
        answers = [
            httpx.post(
                f"{nodes[index % 2].url}/api/v3/list-automations", json={"key": key}, timeout=10
            )
            for index in range(LIMIT + 1)
        ]
        assert [answer.status_code for answer in answers] == [200] * LIMIT + [429]
        assert answers[-1].json() == {"status": "error", "message": RATE_LIMITED}
        assert 50 < int(answers[-1].headers["Retry-After"]) <= 60
        # The other node refuses the key as well: the count is the cluster's.
        again = httpx.post(f"{nodes[1].url}/api/v3/list-automations", json={"key": key}, timeout=10)
        assert again.status_code == 429
    finally:
        for node in nodes:
            node.stop()
