"""One attempt to deliver a message to one Apprise URL (blocking: run it in a thread)."""

from __future__ import annotations

from runyard.apprise_loader import load_apprise

apprise = load_apprise()

_REASON_LEVELS = frozenset({"WARNING", "ERROR", "CRITICAL"})


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
    try:
        result = notifier.notify(body=body, title=title, body_format=apprise.NotifyFormat.TEXT)
    except Exception as error:  # noqa: BLE001 - a plugin's bug is a failed delivery
        return f"Apprise failed: {error}"
    if result:
        return None
    # Apprise 2 keeps what each service logged while sending: the reason is there.
    reasons = [
        entry.message
        for service in result
        for entry in service.logs()
        if entry.level in _REASON_LEVELS
    ]
    return "; ".join(dict.fromkeys(reasons)) or "the service did not accept the message"
