"""Who a run's process runs as: the daemon's user, or a task's `user` when the daemon is root."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass


@dataclass(frozen=True)
class RunAs:
    """A user from the password database, with what a process started as them gets."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, as login would set them
    home: str

    def environment(self) -> dict[str, str]:
        """The variables login (and cron) set for the user: HOME, USER, LOGNAME."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


class CannotRunAs(OSError):
    """A task's `user` cannot be switched to: unknown, or the daemon is not root."""


def resolve_user(name: str, *, euid: int | None = None) -> RunAs | None:
    """Return who to start a process of a task with `user = name` as; None: the daemon's user.

    Raise CannotRunAs when the user does not exist (any more) or when the
    daemon, not being root, cannot become them.
    """
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise CannotRunAs(f"user {name!r} does not exist on this machine") from None
    euid = os.geteuid() if euid is None else euid
    if entry.pw_uid == euid:
        return None  # already that user: nothing to switch
    if euid != 0:
        raise CannotRunAs(
            f"the task runs as user {name!r}, which needs the daemon to run as root "
            f"(it runs as uid {euid})"
        )
    groups = tuple(group for group in os.getgrouplist(name, entry.pw_gid) if group != entry.pw_gid)
    return RunAs(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir or "/")
