"""The README's notification examples are configs runyard accepts, and its template renders."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from runyard.config import parse_config_text
from runyard.notifications.message import MessageFacts, render

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text("utf-8")
    start = text.index("\n## Notifications\n")
    return text[start : text.index("\n## ", start + 1)]


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", section(), re.DOTALL | re.MULTILINE)


def test_the_examples_together_are_a_valid_config(tmp_path: Path) -> None:
    (template,) = blocks("jinja")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "failure.txt").write_text(template, "utf-8")
    examples = blocks("toml")
    assert len(examples) == 3
    text = "\n".join(examples) + '\n[tasks.backup-db]\nrun = "true"\n'
    config = parse_config_text(text, tmp_path / "runyard.toml", environ={})
    assert sorted(config.notifications.notifiers) == ["hooks", "mail", "ops"]
    assert len(config.notifications.routes) == 3
    assert config.warnings == ()


def test_the_template_example_renders() -> None:
    (template,) = blocks("jinja")
    facts = MessageFacts(
        kind="failed",
        task="backup-db",
        run_id="01J0000000000000000000000",
        run_url="https://runyard.example.com/runs/01J0000000000000000000000",
        outcome="failed",
        exit_code=4,
        duration=timedelta(seconds=2, milliseconds=500),
        log_lines=["dumping", "pg_dump: connection refused"],
    )
    title, body = render(facts, template)
    assert title == "[ops] backup-db failed"
    assert body.splitlines() == [
        "backup-db ended failed with exit code 4 after 2s500ms.",
        "See https://runyard.example.com/runs/01J0000000000000000000000",
        "> dumping",
        "> pg_dump: connection refused",
    ]
