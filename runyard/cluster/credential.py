"""The credential nodes present to each other, and its check.

A node asks another for a run's log, live output or stop on behalf of a
caller whose credential (a dashboard session, the asking node's own token)
is good on the asking node only. It carries the cluster secret instead, a
random value every node reads from the shared database at start
(store/cluster.py). The node asked accepts it on the endpoints of
`api/auth.py`'s CLUSTER_ROUTES alone.
"""

from __future__ import annotations

import secrets

# The header that carries the cluster secret. Never logged, never echoed.
CLUSTER_HEADER = "Runyard-Cluster-Credential"
# The name of the node that forwarded a request (for the log of the node asked).
FORWARDED_BY_HEADER = "Runyard-Forwarded-By"


def credential_matches(given: str | None, secret: str | None) -> bool:
    """Return whether `given` is the cluster secret (False when either is missing)."""
    if not given or not secret:
        return False
    # compare_digest refuses non-ASCII str; compare the bytes instead.
    return secrets.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))
