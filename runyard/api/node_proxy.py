"""Answer a request for a run's log with what the run's own node answers (several nodes).

A run's log stays on the disk of the node that ran it. Any other node asked
for it passes the request on to that node (`Runyard.log_peer` says which,
`cluster/client.py` asks it) and streams its answer back as it comes, status
and headers included: the caller gets what the run's node gives. A request
that another node forwarded is answered where it lands, never forwarded
again, so a registry URL that points back at the asking node cannot loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runyard.api.deps import Closing
from runyard.app import Runyard
from runyard.cluster.client import PeerAnswer
from runyard.cluster.credential import CLUSTER_HEADER, credential_matches
from runyard.domain.models import Run

# What of the caller's request the run's node needs to give the same answer.
_PASSED_ON = ("accept", "content-type", "last-event-id")


def is_forwarded(request: Request) -> bool:
    """Return whether another node forwarded this request (it carries the cluster credential)."""
    runyard: Runyard = request.app.state.runyard
    return credential_matches(request.headers.get(CLUSTER_HEADER), runyard.cluster_secret)


async def log_elsewhere(
    request: Request,
    runyard: Runyard,
    run: Run,
    *,
    path: str | None = None,
    query: str | None = None,
    live: bool = False,
    closing: Closing | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response | None:
    """Return the run's node's answer when its log is on another node's disk; None otherwise.

    `path` and `query`: what to ask of that node's REST API (by default the
    request's own); `headers` replace those of its answer (the dashboard's
    own); `live`: a stream that may be quiet between keepalives, ended when
    `closing` is set. NodeUnreachable (a 503) when the node cannot answer.
    """
    if is_forwarded(request):
        return None
    peer = await runyard.log_peer(run)
    if peer is None or runyard.peers is None:
        return None
    answer = await runyard.peers.open(
        peer,
        run.id,
        request.method,
        path if path is not None else request.url.path.removeprefix(request.scope["root_path"]),
        query=_passed_on_query(request) if query is None else query,
        headers={name: request.headers[name] for name in _PASSED_ON if name in request.headers},
        live=live,
    )
    sent = dict(answer.headers)
    if headers:
        # Case-insensitive replacement: the answer's own names are lower-case.
        sent = {name: value for name, value in sent.items() if name.lower() not in _lower(headers)}
        sent.update(headers)
    return StreamingResponse(_relay(answer, closing), status_code=answer.status, headers=sent)


async def log_stream_elsewhere(
    request: Request,
    runyard: Runyard,
    run: Run,
    first: int,
    closing: Closing | None,
    headers: Mapping[str, str],
) -> Response | None:
    """The live log stream of a run of another node, from event `first`; None: it is ours."""
    return await log_elsewhere(
        request,
        runyard,
        run,
        path=f"/api/runs/{run.id}/log/stream",
        query=f"from={first}",
        live=True,
        closing=closing,
        headers=headers,
    )


def _passed_on_query(request: Request) -> str:
    # `?token=` opens this node's streams; the node asked gets the cluster credential.
    return urlencode(
        [(key, value) for key, value in request.query_params.multi_items() if key != "token"]
    )


def _lower(headers: Mapping[str, str]) -> set[str]:
    return {name.lower() for name in headers}


async def _relay(answer: PeerAnswer, closing: Closing | None) -> AsyncIterator[bytes]:
    """Yield the answer's body as it comes, until it ends or the server is closing."""
    chunks = answer.chunks()
    closed = asyncio.ensure_future(closing.wait()) if closing is not None else None
    step: asyncio.Future[bytes] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(chunks))
            if closed is not None:
                await asyncio.wait({step, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    return
            try:
                chunk = await step
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        if step is not None and not step.done():
            # The body's reader must have stopped before the body is closed.
            step.cancel()
            await asyncio.wait({step})
        if closed is not None:
            closed.cancel()
        await chunks.aclose()
        await answer.close()
