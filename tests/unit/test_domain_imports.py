"""The domain layer stays pure: it imports only the standard library and itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "runyard" / "domain"
ALLOWED_THIRD_PARTY = {"cronsim"}  # the cron parser behind runyard.domain.schedule


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted(DOMAIN.glob("*.py")), ids=lambda p: p.name)
def test_domain_module_imports_only_stdlib_and_domain(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        if name.startswith("runyard."):
            assert name.startswith("runyard.domain"), f"{path.name} imports {name}"
        else:
            assert (
                top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY or top == "__future__"
            ), f"{path.name} imports {name}"


def test_the_check_sees_domain_modules() -> None:
    assert len(list(DOMAIN.glob("*.py"))) >= 5
