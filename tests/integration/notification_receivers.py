"""Real local receivers for notification tests: an HTTP server and an SMTP server.

Apprise URLs point at them on 127.0.0.1 (json://, mailto://, slack:// with its
webhook host moved here); they record what arrives, and the HTTP one can be
told to fail the next requests, or to hold them.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Post:
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver:
    """Accept POSTs on 127.0.0.1; answer 200 "ok" (what Slack answers), or fail on demand."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.refused = 0  # requests answered with an error
        self._fail_next = 0
        self._lock = threading.Condition()
        self.release = threading.Event()  # cleared: requests wait for it (a hung receiver)
        self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.release.wait(30)
                with receiver._lock:
                    failing = receiver._fail_next > 0
                    if failing:
                        receiver._fail_next -= 1
                        receiver.refused += 1
                    else:
                        receiver.posts.append(Post(self.path, body))
                    receiver._lock.notify_all()
                self.send_response(500 if failing else 200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"receiver down" if failing else b"ok")

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._fail_next = count

    def wait_for(self, count: int, timeout: float = 30) -> list[Post]:
        """Return the posts once `count` have arrived; fail the test after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.posts) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.posts)} posts arrived, expected {count}"
                self._lock.wait(left)
            return list(self.posts)

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


class _Handler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self._receiver = receiver

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._receiver.lock:
            self._receiver.messages.append(message)
            self._receiver.recipients.append(list(envelope.rcpt_tos))
            self._receiver.lock.notify_all()
        return "250 OK"


class SmtpReceiver:
    """An SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []
        self.lock = threading.Condition()
        self.port = _free_port()
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def wait_for(self, count: int, timeout: float = 30) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.messages)} emails arrived, expected {count}"
                self.lock.wait(left)
            return list(self.messages)

    def close(self) -> None:
        self._controller.stop()


def text_of(message: EmailMessage) -> str:
    """Return the plain-text body of an email."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "the email has no text/plain part"
    content = part.get_content()
    assert isinstance(content, str)
    return content


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
