"""The text of a notification: the built-in template, or the notifier's own Jinja2 one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jinja2

from runyard.domain.durations import format_duration

LOG_TAIL_LINES = 20

# The built-in message. A notifier's `template` replaces it; `{% set title =
# "..." %}` at its top level replaces the title too.
DEFAULT_TEMPLATE = """\
{% if repeats %}
{{ task }}: {{ kind }} {{ repeats }} more time{{ "s" if repeats != 1 else "" }} \
since {{ first_at }} (folded into this message; the first one was sent then).
{% endif %}
{% if run_id %}
{% if instance is not none %}
Service: {{ task }} (instance {{ instance }})
{% else %}
Task: {{ task }}
{% endif %}
Outcome: {{ outcome }}{% if exit_code is not none %} (exit code {{ exit_code }}){% endif %}

{% if duration %}
Duration: {{ duration }}
{% endif %}
{% if run_url %}
Run: {{ run_url }}
{% endif %}
{% else %}
{% if task %}Task: {{ task }}
{% endif %}
{% endif %}
{% if detail %}
{{ detail }}
{% endif %}
{% if log_lines %}

Last {{ log_lines | length }} log line{{ "s" if log_lines | length != 1 else "" }}:
{% for line in log_lines %}
    {{ line }}
{% endfor %}
{% endif %}
"""


@dataclass(frozen=True)
class MessageFacts:
    """What a message can say: the names a template sees."""

    kind: str
    task: str | None
    count: int = 1  # events this message stands for
    repeats: int = 0  # events folded into it (a window's summary, or unreported ones)
    first_at: datetime | None = None  # when the folded window opened
    run_id: str | None = None
    run_url: str | None = None
    outcome: str | None = None  # the run's end reason
    exit_code: int | None = None
    duration: timedelta | None = None
    log_lines: list[str] = field(default_factory=list)
    detail: str = ""  # the refusal's reason (disk_full, quota_exhausted), what a service did
    account: str | None = None
    instance: int | None = None  # the service's instance (a run of kind `service`), else None

    def variables(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "task": self.task or "",
            "count": self.count,
            "repeats": self.repeats,
            "first_at": self.first_at.isoformat() if self.first_at else "",
            "run_id": self.run_id or "",
            "run_url": self.run_url or "",
            "outcome": self.outcome or self.kind,
            "exit_code": self.exit_code,
            "duration": format_duration(self.duration) if self.duration is not None else "",
            "duration_seconds": self.duration.total_seconds() if self.duration else None,
            "log_lines": self.log_lines,
            "detail": self.detail,
            "account": self.account or "",
            "instance": self.instance,
        }


def default_title(facts: MessageFacts) -> str:
    """Return the built-in title: `runyard: backup failed (exit 1)`, with the count."""
    subject = facts.task or "daemon"
    if facts.instance is not None:
        subject += f"[{facts.instance}]"
    title = f"runyard: {subject} {facts.kind}"
    if facts.exit_code is not None and facts.kind not in ("succeeded", "recovered"):
        title += f" (exit {facts.exit_code})"
    if facts.count > 1:
        title += f" x{facts.count}"
    return title


_ENVIRONMENT = jinja2.Environment(autoescape=False, trim_blocks=True, lstrip_blocks=True)
_DEFAULT = _ENVIRONMENT.from_string(DEFAULT_TEMPLATE)
_compiled: dict[str, jinja2.Template] = {}


def render(facts: MessageFacts, template: str | None) -> tuple[str, str]:
    """Return (title, body) of a message; a template that fails falls back to the built-in."""
    variables = facts.variables()
    note = ""
    if template is not None:
        try:
            compiled = _compiled.get(template)
            if compiled is None:
                compiled = _compiled[template] = _ENVIRONMENT.from_string(template)
            module = compiled.make_module(variables)
            title = getattr(module, "title", None)
            return (str(title) if title else default_title(facts)), str(module).strip()
        except Exception as error:  # noqa: BLE001 - the message must still go out
            note = f"\n\n(The notifier's template failed: {error}; runyard's own was used.)"
    return default_title(facts), str(_DEFAULT.render(variables)).strip() + note
