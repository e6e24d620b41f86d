"""The HTTP client a node asks another node with (httpx), always with timeouts.

Logs and the output of a running run stay on the disk of the node that ran
it, and only that node holds its process; any other node asked for them
forwards the request here (docs/DESIGN.md, "Several nodes"). Every failure
to get an answer (connection refused, a timeout, the credential refused)
becomes `NodeUnreachable` naming the node, never a hang or a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from runyard.cluster.credential import CLUSTER_HEADER, FORWARDED_BY_HEADER
from runyard.exceptions import NodeUnreachable

log = logging.getLogger("runyard.cluster")

# A node that does not accept a connection within this is not answering.
CONNECT_SECONDS = 3.0
# The longest wait for the next bytes of an answer that is not a live stream.
READ_SECONDS = 15.0
# A live stream (the log follow) sends a keepalive every 15 s: two missed in a
# row and the node is gone (a machine cut off sends no reset).
STREAM_READ_SECONDS = 35.0


@dataclass
class PeerAnswer:
    """An answer of another node, its body still to be read (`chunks`), then `close`d."""

    node: str
    status: int
    headers: list[tuple[str, str]]
    response: httpx.Response

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """Yield the body as it comes; a node lost halfway ends it early (logged by the caller)."""
        try:
            async for chunk in self.response.aiter_raw():
                yield chunk
        except httpx.HTTPError as error:
            # The answer has begun: its status cannot change any more. A
            # follower (EventSource) reconnects with Last-Event-ID and is then
            # told what became of the node.
            log.warning("the answer of %s broke off: %s", self.node, _reason(error))

    async def close(self) -> None:
        await self.response.aclose()


@dataclass(frozen=True)
class Peer:
    """A node to ask: its name (for errors) and the base URL it registered."""

    name: str
    url: str


class NodeClient:
    """Ask other nodes, carrying the cluster secret; one connection pool for the daemon."""

    def __init__(
        self,
        node_name: str,
        secret: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        connect_seconds: float = CONNECT_SECONDS,
        read_seconds: float = READ_SECONDS,
        stream_read_seconds: float = STREAM_READ_SECONDS,
    ) -> None:
        self._node_name = node_name
        self._secret = secret
        self._transport = transport
        self._connect = connect_seconds
        self._read_seconds = read_seconds
        self._stream_read = stream_read_seconds
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # Node-to-node traffic stays inside the cluster: no HTTP(S)_PROXY
            # from the environment; redirects are passed back, not followed.
            self._client = httpx.AsyncClient(
                transport=self._transport, trust_env=False, follow_redirects=False
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def open(
        self,
        peer: Peer,
        run_id: str,
        method: str,
        path: str,
        *,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        live: bool = False,
    ) -> PeerAnswer:
        """Send a request to `peer` and return its answer once the headers are in.

        `live`: the answer is a stream that may stay quiet between keepalives.
        NodeUnreachable when the node does not answer or refuses the credential.
        """
        sent = {
            key: value
            for key, value in (headers or {}).items()
            if key.lower() not in _NOT_FORWARDED
        }
        # The body is passed on as the node wrote it (no decompression here).
        sent["Accept-Encoding"] = "identity"
        sent[CLUSTER_HEADER] = self._secret
        sent[FORWARDED_BY_HEADER] = self._node_name
        url = peer.url.rstrip("/") + path + (f"?{query}" if query else "")
        read = self._stream_read if live else self._read_seconds
        timeout = httpx.Timeout(read, connect=self._connect, pool=self._connect)
        client = self._http()
        try:
            request = client.build_request(method, url, headers=sent, content=body, timeout=timeout)
            response = await client.send(request, stream=True)
        except httpx.TimeoutException as error:
            waited = self._connect if isinstance(error, httpx.ConnectTimeout) else read
            raise NodeUnreachable(
                run_id, peer.name, f"{peer.url} did not answer within {waited:g} s"
            ) from None
        except httpx.HTTPError as error:
            raise NodeUnreachable(run_id, peer.name, f"{peer.url}: {_reason(error)}") from None
        if response.status_code == 401:
            await response.aclose()
            raise NodeUnreachable(
                run_id,
                peer.name,
                f"{peer.url} refused this node's cluster credential "
                "(is it a node of the same database?)",
            )
        return PeerAnswer(
            node=peer.name,
            status=response.status_code,
            headers=[
                (key, value)
                for key, value in response.headers.items()
                if key.lower() not in _NOT_PASSED_BACK
            ],
            response=response,
        )

    async def post(self, peer: Peer, run_id: str, path: str) -> tuple[int, str]:
        """POST to `path` on `peer`; return the status and the problem's detail (or the body)."""
        answer = await self.open(peer, run_id, "POST", path, headers={"Accept": "application/json"})
        body = await self._read(answer, run_id)
        return answer.status, _detail(body)

    async def get_json(self, peer: Peer, run_id: str, path: str, query: str = "") -> Any:
        """Return the JSON body of a GET answered 200; NodeUnreachable otherwise."""
        answer = await self.open(
            peer, run_id, "GET", path, query=query, headers={"Accept": "application/json"}
        )
        body = await self._read(answer, run_id)
        if answer.status != 200:
            raise NodeUnreachable(
                run_id, peer.name, f"{peer.url}{path} answered {answer.status}: {_detail(body)}"
            )
        try:
            return json.loads(body)
        except ValueError:
            raise NodeUnreachable(
                run_id, peer.name, f"{peer.url}{path} answered something that is not JSON"
            ) from None

    @staticmethod
    async def _read(answer: PeerAnswer, run_id: str) -> bytes:
        try:
            return await answer.response.aread()
        except httpx.HTTPError as error:
            raise NodeUnreachable(run_id, answer.node, _reason(error)) from None
        finally:
            await answer.close()


# Hop-by-hop headers and the caller's own credentials stay on this side.
_NOT_FORWARDED = frozenset(
    {
        "host",
        "authorization",
        "cookie",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "accept-encoding",
        "te",
        "upgrade",
        "proxy-authorization",
        CLUSTER_HEADER.lower(),
        FORWARDED_BY_HEADER.lower(),
    }
)
_NOT_PASSED_BACK = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "set-cookie", "date"}
    | {"server"}
)


def _reason(error: httpx.HTTPError) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, httpx.ConnectError):
        return f"no connection ({text})"
    return text


def _detail(body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
        return str(parsed["detail"])
    return body[:200].decode("utf-8", "replace")
