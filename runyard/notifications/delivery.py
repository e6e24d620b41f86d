"""One attempt to deliver a message to one Apprise URL (blocking: run it in a thread)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from runyard.notifications._apprise import load_apprise

apprise = load_apprise()

_APPRISE_LOGGER = logging.getLogger("apprise")


class _ThreadLines(logging.Handler):
    """Keep the warnings Apprise logs from one thread: the reason a delivery failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())


@contextmanager
def _apprise_warnings() -> Iterator[list[str]]:
    handler = _ThreadLines()
    _APPRISE_LOGGER.addHandler(handler)
    try:
        yield handler.lines
    finally:
        _APPRISE_LOGGER.removeHandler(handler)


def shown_url(url: str) -> str:
    """Return `url` as Apprise shows it with passwords and tokens hidden (scheme://host...)."""
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return url.partition("://")[0] + "://..."
    shown: str = plugin.url(privacy=True)
    return shown.partition("?")[0]


def send(url: str, title: str, body: str) -> str | None:
    """Deliver one message to `url` through Apprise; return None, or why it failed."""
    notifier = apprise.Apprise()
    if not notifier.add(url):
        return "Apprise refused the URL"
    with _apprise_warnings() as lines:
        try:
            delivered = bool(
                notifier.notify(body=body, title=title, body_format=apprise.NotifyFormat.TEXT)
            )
        except Exception as error:  # noqa: BLE001 - a plugin's bug is a failed delivery
            return f"Apprise failed: {error}"
    if delivered:
        return None
    return "; ".join(dict.fromkeys(lines)) or "the service did not accept the message"
