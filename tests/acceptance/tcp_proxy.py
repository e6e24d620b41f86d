"""A TCP proxy a test controls: forward to a server, then cut the link, then restore it.

`cut()` is a network gone silent, not a refused connection: bytes already
sent stay unanswered and new connections are accepted but never reach the
server, so a client learns of it only by its own timeouts. `restore()`
breaks every connection that lived through the cut (as a real outage does)
and forwards new ones again.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    """Listen on 127.0.0.1:<port> and forward each connection to `target`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open = threading.Event()  # set: forwarding; clear: cut
        self._open.set()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept_forever, name="proxy-accept", daemon=True).start()

    def cut(self) -> None:
        """Stop forwarding anything, in either direction, on any connection."""
        self._open.clear()

    def restore(self) -> None:
        """Break every connection that lived through the cut; forward new ones."""
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _close(sock)
        self._open.set()

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.restore()

    def _accept_forever(self) -> None:
        while not self._closed:
            try:
                client, _address = self._listener.accept()
            except OSError:
                return
            self._remember(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._open.wait()  # accepted during a cut: it hangs, as on a dead network
        if self._forgotten(client):
            return
        try:
            server = socket.create_connection(self._target, timeout=5)
        except OSError:
            _close(client)
            return
        server.settimeout(None)
        self._remember(server)
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                self._open.wait()  # held, never delivered, while cut
                if self._forgotten(source):
                    break  # the connection was broken by restore()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)

    def _remember(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _forgotten(self, sock: socket.socket) -> bool:
        with self._lock:
            return sock not in self._sockets


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
