"""Load Apprise once, with its plugins, for the config checks and the deliveries.

A leaf of its own: `runyard.config` (URL checks) and `runyard.notifications`
(deliveries) both use it, and neither imports the other for it.
"""

from __future__ import annotations

import functools
import warnings
from types import ModuleType


@functools.cache
def load_apprise() -> ModuleType:
    """Import Apprise and load every plugin now (0.2 s; only configs with notifiers pay).

    Loading the email plugin imports `imghdr`, which Python 3.11 and 3.12
    deprecate (Apprise shims it on 3.13): that one warning is not ours to act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*imghdr.*", category=DeprecationWarning)
        import apprise  # noqa: PLC0415
        from apprise.manager_plugins import NotificationManager  # noqa: PLC0415

        NotificationManager().schemas()  # type: ignore[no-untyped-call]
    return apprise


def schemes() -> frozenset[str]:
    """Return the URL schemes Apprise has a service for."""
    load_apprise()
    from apprise.manager_plugins import NotificationManager  # noqa: PLC0415

    return frozenset(NotificationManager().schemas())  # type: ignore[no-untyped-call]
