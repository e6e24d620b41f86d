"""The `[notifications]`, `[notifiers.<name>]` and `[[routes]]` tables.

Apprise and Jinja2 are imported only when a config declares notifiers: the
CLI's own start-up must not pay for them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from runyard.config.checks import (
    Problems,
    absolute_path,
    check_duration,
    check_int,
    check_keys,
    check_str,
    check_table,
    describe,
    key_path,
    quote,
)
from runyard.domain.models import TASK_NAME_RE, TaskDefinition
from runyard.domain.notifications import NotificationKind, Route

SETTINGS_KEYS = ("coalesce_window", "retry_budget", "max_pending")
NOTIFIER_KEYS = ("urls", "template", "retry_budget")
ROUTE_KEYS = ("kinds", "tasks", "notifiers")
DEFAULT_COALESCE_WINDOW = timedelta(hours=1)
DEFAULT_RETRY_BUDGET = timedelta(minutes=5)
DEFAULT_MAX_PENDING = 1000


@dataclass(frozen=True)
class Notifier:
    """One `[notifiers.<name>]`: where its messages go and how they read."""

    name: str
    urls: tuple[str, ...]  # Apprise URLs; none: the message is kept in-app only
    template_path: Path | None = None  # absolute; None: the built-in template
    template: str | None = None  # the template's text, read when the config was loaded
    retry_budget: timedelta | None = None  # None: [notifications] retry_budget


@dataclass(frozen=True)
class NotificationSettings:
    """Every notification setting of a config; empty routes mean nothing is sent."""

    coalesce_window: timedelta = DEFAULT_COALESCE_WINDOW
    retry_budget: timedelta = DEFAULT_RETRY_BUDGET
    max_pending: int = DEFAULT_MAX_PENDING  # messages waiting or being delivered, at most
    notifiers: dict[str, Notifier] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()

    def budget_of(self, notifier: str) -> timedelta:
        """Return the retry budget of `notifier` (its own, else the shared one)."""
        own = self.notifiers[notifier].retry_budget
        return self.retry_budget if own is None else own


def parse_notifications(
    document: Mapping[str, object],
    base_dir: Path,
    tasks: Mapping[str, TaskDefinition],
    problems: Problems,
    services: Collection[str] = (),
) -> NotificationSettings:
    """Return the checked notification tables of a config document.

    A route's `tasks` globs match task and service names alike.
    """
    settings = _parse_settings(document.get("notifications", {}), problems)
    raw_notifiers = document.get("notifiers", {})
    notifiers = _parse_notifiers(raw_notifiers, base_dir, problems)
    # A notifier refused for a bad URL is still declared: routes naming it
    # are not reported again as naming an unknown one.
    declared = set(raw_notifiers) if isinstance(raw_notifiers, dict) else set()
    names = [*tasks, *services]
    routes = _parse_routes(document.get("routes", []), declared, names, problems)
    return NotificationSettings(
        **cast(dict[str, Any], settings), notifiers=notifiers, routes=routes
    )


def _parse_settings(value: object, problems: Problems) -> dict[str, object]:
    table = check_table(value, "notifications", problems)
    if table is None:
        return {}
    check_keys(table, "notifications", SETTINGS_KEYS, problems)
    found: dict[str, object] = {}
    for key in ("coalesce_window", "retry_budget"):
        if key in table:
            parsed = check_duration(table[key], f"notifications.{key}", problems)
            if parsed is not None:
                found[key] = parsed
    if "max_pending" in table:
        pending = check_int(table["max_pending"], "notifications.max_pending", problems, 1)
        if pending is not None:
            found["max_pending"] = pending
    return found


def _parse_notifiers(value: object, base_dir: Path, problems: Problems) -> dict[str, Notifier]:
    table = check_table(value, "notifiers", problems)
    if table is None:
        return {}
    notifiers: dict[str, Notifier] = {}
    for name, body in sorted(table.items()):
        path = key_path("notifiers", name)
        if not TASK_NAME_RE.match(name):
            problems.add(path, "a notifier name is 1-100 letters, digits, '.', '_' or '-'")
            continue
        notifier = _parse_notifier(name, body, path, base_dir, problems)
        if notifier is not None:
            notifiers[name] = notifier
    return notifiers


def _parse_notifier(
    name: str, value: object, path: str, base_dir: Path, problems: Problems
) -> Notifier | None:
    table = check_table(value, path, problems)
    if table is None:
        return None
    check_keys(table, path, NOTIFIER_KEYS, problems)
    before = len(problems)
    urls = _parse_urls(table.get("urls", []), f"{path}.urls", problems)
    template_path, template = None, None
    if "template" in table:
        template_path, template = _parse_template(
            table["template"], f"{path}.template", base_dir, problems
        )
    budget = None
    if "retry_budget" in table:
        budget = check_duration(table["retry_budget"], f"{path}.retry_budget", problems)
    if len(problems) > before:
        return None
    return Notifier(name, urls, template_path, template, budget)


def _parse_urls(value: object, path: str, problems: Problems) -> tuple[str, ...]:
    if not isinstance(value, list):
        problems.add(path, f"expected an array of Apprise URLs, got {describe(value)}")
        return ()
    urls: list[str] = []
    for index, item in enumerate(value):
        at = f"{path}[{index}]"
        url = check_str(item, at, problems, non_empty=True)
        if url is None:
            continue
        problem = apprise_url_problem(url)
        if problem is not None:
            problems.add(at, problem)
            continue
        urls.append(url)
    return tuple(urls)


def apprise_url_problem(url: str) -> str | None:
    """Return why Apprise refuses `url`, or None when it accepts it.

    The URL itself is never repeated: it may carry a password or a token.
    """
    from runyard.apprise_loader import load_apprise, schemes  # noqa: PLC0415

    scheme, separator, _rest = url.partition("://")
    if not separator or not scheme:
        return 'not an Apprise URL (expected "<scheme>://...", such as "json://host/path")'
    if scheme.lower() not in schemes():
        return f"Apprise has no service with the scheme {quote(scheme)}"
    if load_apprise().Apprise.instantiate(url) is None:
        return (
            f"Apprise refuses this {scheme}:// URL (a part it needs is missing or malformed; "
            "see the service's page in Apprise's documentation)"
        )
    return None


def _parse_template(
    value: object, path: str, base_dir: Path, problems: Problems
) -> tuple[Path | None, str | None]:
    relative = check_str(value, path, problems, non_empty=True)
    if relative is None:
        return None, None
    file = absolute_path(base_dir, relative)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.add(path, f"template file {file} does not exist")
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problems.add(path, f"cannot read the template file {file}: {reason}")
        return None, None
    problem = template_problem(text)
    if problem is not None:
        problems.add(path, f"{file}: {problem}")
        return None, None
    return file, text


def template_problem(text: str) -> str | None:
    """Return the Jinja2 syntax error in a template's text, or None."""
    import jinja2  # noqa: PLC0415 - only configs with a template pay for it

    try:
        jinja2.Environment(autoescape=False).parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return f"Jinja2 syntax error at line {exc.lineno}: {exc.message}"
    return None


def _parse_routes(
    value: object,
    notifiers: Collection[str],
    names: Collection[str],
    problems: Problems,
) -> tuple[Route, ...]:
    if not isinstance(value, list):
        problems.add("routes", f"expected [[routes]] tables, got {describe(value)}")
        return ()
    routes: list[Route] = []
    for index, body in enumerate(value):
        path = f"routes[{index}]"
        table = check_table(body, path, problems)
        if table is None:
            continue
        check_keys(table, path, ROUTE_KEYS, problems)
        before = len(problems)
        kinds = _parse_kinds(table.get("kinds"), f"{path}.kinds", problems)
        globs = _parse_globs(table.get("tasks", ["*"]), f"{path}.tasks", names, problems)
        names = _parse_route_notifiers(
            table.get("notifiers"), f"{path}.notifiers", notifiers, problems
        )
        if len(problems) == before:
            routes.append(Route(kinds=frozenset(kinds), notifiers=names, tasks=globs))
    return tuple(routes)


def _string_list(value: object, path: str, what: str, problems: Problems) -> list[str] | None:
    if value is None:
        problems.add(path, f"missing: give the {what} as an array of strings")
        return None
    if not isinstance(value, list):
        problems.add(path, f"expected an array of {what}, got {describe(value)}")
        return None
    if not value:
        problems.add(path, f"must not be empty: give at least one of the {what}")
        return None
    items: list[str] = []
    for index, item in enumerate(value):
        text = check_str(item, f"{path}[{index}]", problems, non_empty=True)
        if text is not None:
            items.append(text)
    return items if len(items) == len(value) else None


def _parse_kinds(value: object, path: str, problems: Problems) -> list[str]:
    items = _string_list(value, path, "event kinds", problems)
    known = [kind.value for kind in NotificationKind]
    for index, kind in enumerate(items or []):
        if kind not in known:
            problems.add(
                f"{path}[{index}]", f"unknown kind {quote(kind)}; the kinds are {', '.join(known)}"
            )
    return items or []


def _parse_globs(
    value: object, path: str, names: Collection[str], problems: Problems
) -> tuple[str, ...]:
    import fnmatch  # noqa: PLC0415 - cheap, but only routes need it

    items = _string_list(value, path, "task names or globs", problems)
    for index, pattern in enumerate(items or []):
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            problems.warn(
                f"{path}[{index}]", f"{quote(pattern)} matches no task or service of this config"
            )
    return tuple(items or ())


def _parse_route_notifiers(
    value: object, path: str, notifiers: Collection[str], problems: Problems
) -> tuple[str, ...]:
    items = _string_list(value, path, "notifier names", problems)
    for index, name in enumerate(items or []):
        if name not in notifiers:
            declared = ", ".join(sorted(notifiers)) or "none"
            problems.add(
                f"{path}[{index}]",
                f"unknown notifier {quote(name)}; declared notifiers: {declared}",
            )
    return tuple(dict.fromkeys(items or ()))
