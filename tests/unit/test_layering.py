"""The architecture, checked: what each part of runyard may import (docs/DESIGN.md, "Layers").

Every module under runyard/ is parsed (never imported) and every import it makes is
collected: top-level, inside functions and under `TYPE_CHECKING` alike, since each is a
dependency. A *part* is a first-level package (`runyard.engine`) or a top-level module
(`runyard.app`). `ALLOWED` says which parts, or single modules, each part may import
besides itself; `MODULE_GRANTS` widens that for one module with its reason. On top:
no private name or private module is imported from another part; each third-party
library stays in its home (`THIRD_PARTY_HOMES`); and parts form no import cycle.

`KNOWN_VIOLATIONS` lists what the code does today against these rules, each with the
change that removes it; an entry that no longer matches anything fails too, so the list
only shrinks.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "runyard"

ROOT = "runyard"  # runyard/__init__.py: `__version__`, readable from anywhere

# The dashboard and the REST API sit side by side; the two modules that mount both and
# run the daemon form a part of their own above them.
HTTP_COMPOSITION = "runyard.api.(app, server)"
PART_OF = {"runyard.api.app": HTTP_COMPOSITION, "runyard.api.server": HTTP_COMPOSITION}

# What the API and the dashboard may use of the engine: its events, to follow them, and
# its waits that give way to shutdown (engine/waiting.py), to stream them. Everything
# else they reach through `runyard.app.Runyard`.
ENGINE_FACADE = {"runyard.engine.events", "runyard.engine.waiting"}

# The HTTP helpers of runyard.api the dashboard shares (it is an HTTP adapter too).
API_SHARED_WITH_WEB = {
    "runyard.api.deps",
    "runyard.api.params",
    "runyard.api.sse",
    "runyard.api.routes_events",
    "runyard.api.routes_keys",
    "runyard.api.routes_logs",
    "runyard.api.node_proxy",  # a run's log from the node whose disk holds it
}

# Leaves: they import nothing of runyard but ROOT (always allowed).
_LEAVES = {
    "runyard.domain",  # pure: models, enums, policies (time is passed in)
    "runyard.clock",  # the one clock read (utc_now), injected everywhere else
    "runyard.daemon_log",  # logging set-up
    "runyard.systemd_unit",  # text of a systemd unit
    "runyard.apprise_loader",  # Apprise and its plugins, loaded once
}

ALLOWED: dict[str, set[str]] = {
    **{leaf: set() for leaf in _LEAVES},
    # Every exception runyard raises on purpose; RunAlreadyEnded carries the ended Run.
    "runyard.exceptions": {"runyard.domain"},
    "runyard.__main__": {"runyard.cli"},
    "runyard.output": {"runyard.domain"},  # the helper task scripts import
    "runyard.daemon_lock": {"runyard.exceptions"},
    "runyard.importers": {"runyard.domain", "runyard.exceptions"},
    "runyard.config": {
        "runyard.domain",
        "runyard.exceptions",
        "runyard.clock",
        "runyard.apprise_loader",
    },
    # The only part that knows SQL.
    "runyard.store": {"runyard.domain", "runyard.exceptions", "runyard.clock"},
    "runyard.body_parser": {"runyard.domain", "runyard.store", "runyard.exceptions"},
    # Owns processes and time; knows nothing of HTTP, the v3 API or notifications.
    "runyard.engine": {
        "runyard.domain",
        "runyard.store",
        "runyard.exceptions",
        "runyard.clock",
        "runyard.output",
    },
    # Long-running programs (docs/services.md): spawned through the engine's process
    # plumbing (engine/process.py, engine/environment.py), logged like runs.
    "runyard.services": {
        "runyard.domain",
        "runyard.exceptions",
        "runyard.clock",
        "runyard.store",
        "runyard.engine",
    },
    "runyard.notifications": {
        "runyard.domain",
        "runyard.store",
        "runyard.exceptions",
        "runyard.clock",
        "runyard.config",
        "runyard.apprise_loader",
    },
    "runyard.metrics": {"runyard.domain", "runyard.clock", "runyard.engine.observer"},
    # Nodes asking each other over HTTP (httpx) with the cluster credential.
    "runyard.cluster": {"runyard.exceptions"},
    # The v3-compatible service behind api/routes_v3.py and api/routes_viewer.py.
    "runyard.v3": {
        "runyard.domain",
        "runyard.store",
        "runyard.exceptions",
        "runyard.clock",
        "runyard.body_parser",
        *ENGINE_FACADE,
    },
    # The composition root: wires everything below the adapters.
    "runyard.app": {
        "runyard.domain",
        "runyard.exceptions",
        "runyard.clock",
        "runyard.config",
        "runyard.store",
        "runyard.engine",
        "runyard.services",
        "runyard.notifications",
        "runyard.metrics",
        "runyard.v3",
        "runyard.body_parser",
        "runyard.daemon_lock",
        "runyard.cluster",
    },
    # Adapters in: HTTP to service calls.
    "runyard.api": {
        "runyard.app",
        "runyard.domain",
        "runyard.exceptions",
        "runyard.clock",
        "runyard.config",
        "runyard.store",
        "runyard.v3",
        "runyard.body_parser",
        "runyard.metrics",
        "runyard.cluster",
        *ENGINE_FACADE,
    },
    "runyard.web": {
        "runyard.app",
        "runyard.domain",
        "runyard.exceptions",
        "runyard.clock",
        "runyard.store",
        *ENGINE_FACADE,
        *API_SHARED_WITH_WEB,
    },
    HTTP_COMPOSITION: {
        "runyard.api",
        "runyard.web",
        "runyard.app",
        "runyard.config",
        "runyard.store",
        "runyard.daemon_lock",
        "runyard.daemon_log",
        "runyard.exceptions",
    },
    # Talks to a daemon over HTTP (http.client): no server module, no store, no engine.
    "runyard.cli": {
        "runyard.config",
        "runyard.domain",
        "runyard.exceptions",
        "runyard.clock",
        "runyard.importers",
        "runyard.systemd_unit",
        "runyard.daemon_log",
        "runyard.output",
    },
}

# One module allowed more than its part, and why.
MODULE_GRANTS: dict[str, set[str]] = {
    # `runyard serve` runs the daemon in this process.
    "runyard.cli.serve": {HTTP_COMPOSITION},
    # Key management works on an existing database when no daemon answers.
    "runyard.cli.keys": {"runyard.store", "runyard.v3.keys"},
}

# Third-party libraries and the only parts (or modules) that import them.
THIRD_PARTY_HOMES: dict[str, set[str]] = {
    "sqlalchemy": {"runyard.store"},
    "alembic": {"runyard.store"},
    "cronsim": {"runyard.domain.schedule"},
    "apprise": {"runyard.apprise_loader"},
    "prometheus_client": {"runyard.metrics"},
    "fastapi": {"runyard.api", "runyard.web", HTTP_COMPOSITION},
    "starlette": {"runyard.api", "runyard.web"},
    "pydantic": {"runyard.api"},
    "pydantic_core": {"runyard.api"},
    "uvicorn": {"runyard.api.connections", "runyard.api.server"},
    "typer": {"runyard.cli"},
    "jinja2": {"runyard.web", "runyard.notifications.message", "runyard.config.notifications"},
    "tomli_w": {"runyard.importers"},
    "httpx": {"runyard.cluster"},
    "ulid": {
        "runyard.store",
        "runyard.engine",
        "runyard.services",
        "runyard.v3",
        "runyard.notifications",
        "runyard.api.uploads",
    },
}

# Today's name of a part the table knows by its coming one (none at present).
RENAMED: dict[str, str] = {}

# (importing module, imported module or third-party library, rule): what the code does
# today against the rules above, with what removes it.
KNOWN_VIOLATIONS: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name (runyard) or top-level library name
    names: tuple[str, ...]  # for `from x import a, b`; () for `import x`
    line: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.relative_to(PACKAGE).parts:
            continue  # Alembic's scripts: SQL by nature, loaded by the store only
        found[_module_name(path)] = path
    return found


def _canonical(name: str) -> str:
    for old, new in RENAMED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    return name


def _is_module(name: str) -> bool:
    return name in modules()


def imports_of(module: str) -> Iterator[Import]:
    path = modules()[module]
    yield from parse_imports(module, path.read_text(encoding="utf-8"), path.name == "__init__.py")


def parse_imports(module: str, source: str, is_package: bool = False) -> Iterator[Import]:
    tree = ast.parse(source, module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            if base.startswith(ROOT + ".") or base == ROOT:
                # `from runyard.store import dashboard`: the submodule is what is imported.
                submodules = [a.name for a in node.names if _is_module(f"{base}.{a.name}")]
                for name in submodules:
                    yield Import(module, f"{base}.{name}", (), node.lineno)
                rest = tuple(a.name for a in node.names if a.name not in submodules)
                if rest or not submodules:
                    yield Import(module, base, rest, node.lineno)
            else:
                yield Import(module, base, tuple(a.name for a in node.names), node.lineno)


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(found for module in modules() for found in imports_of(module))


def part_of(module: str) -> str:
    module = _canonical(module)
    if module in PART_OF:
        return PART_OF[module]
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _within(module: str, entry: str) -> bool:
    """`module` is `entry` or inside it; HTTP_COMPOSITION stands for its two modules."""
    if entry == HTTP_COMPOSITION:
        return part_of(module) == HTTP_COMPOSITION
    if part_of(module) == HTTP_COMPOSITION and entry == "runyard.api":
        return False  # the API's modules do not reach the composition above them
    return module == entry or module.startswith(entry + ".")


def _is_runyard(name: str) -> bool:
    return name == ROOT or name.startswith(ROOT + ".")


def _private(module: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in module.split("."))


@dataclass(frozen=True)
class Violation:
    importer: str
    imported: str
    rule: str
    line: int
    why: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (_canonical(self.importer), _canonical(self.imported), self.rule)

    def known(self) -> bool:
        importer, imported, rule = self.key
        return any(
            (importer == k_importer or importer.startswith(k_importer + "."))
            and imported == k_imported
            and rule == k_rule
            for k_importer, k_imported, k_rule in KNOWN_VIOLATIONS
        )

    def __str__(self) -> str:
        return (
            f"{self.importer} (line {self.line}) imports {self.imported}: "
            f"breaks rule {self.rule!r}: {self.why}"
        )


def violations(imports: tuple[Import, ...] | None = None) -> list[Violation]:
    found: list[Violation] = []
    for each in all_imports() if imports is None else imports:
        importer, imported = each.importer, _canonical(each.imported)
        source = part_of(importer)
        if not _is_runyard(imported):
            top = imported.split(".")[0]
            homes = THIRD_PARTY_HOMES.get(top)
            if homes is not None and not any(_within(_canonical(importer), home) for home in homes):
                found.append(
                    Violation(
                        importer,
                        top,
                        "third-party home",
                        each.line,
                        f"{top} belongs to {sorted(homes)} only",
                    )
                )
            if source == "runyard.store" and top == "asyncio":
                found.append(
                    Violation(
                        importer,
                        top,
                        "store is synchronous",
                        each.line,
                        "the store runs in threads (engine/writer.py); live fan-out is the "
                        "engine's",
                    )
                )
            continue
        target = part_of(imported)
        if imported == ROOT or target == source:
            continue
        allowed = ALLOWED[source] | MODULE_GRANTS.get(_canonical(importer), set())
        if not any(_within(imported, entry) for entry in allowed):
            found.append(
                Violation(
                    importer,
                    imported,
                    "allowed",
                    each.line,
                    f"{source} may import only {sorted(allowed)}",
                )
            )
        private = [name for name in each.names if name.startswith("_") and name != "__version__"]
        if _private(imported) or private:
            found.append(
                Violation(
                    importer,
                    imported,
                    "private",
                    each.line,
                    f"private {'module' if _private(imported) else 'names ' + str(private)} "
                    f"of another part ({target}): make it public in its home, or move it",
                )
            )
    return found


def part_edges() -> dict[str, dict[str, Import]]:
    """Part -> part it imports -> one import that makes the edge."""
    edges: dict[str, dict[str, Import]] = {}
    for each in all_imports():
        imported = _canonical(each.imported)
        if not _is_runyard(imported) or imported == ROOT:
            continue
        source, target = part_of(each.importer), part_of(imported)
        if source != target:
            edges.setdefault(source, {}).setdefault(target, each)
    return edges


def cycles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Strongly connected components of more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def shortest_cycle(edges: dict[str, dict[str, Import]], component: list[str]) -> list[str]:
    """A shortest path from the component's first part back to it, inside the component."""
    start = component[0]
    inside = set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges.get(node, {})):
                if nxt == start:
                    path = [start]
                    while node != start:
                        path.insert(1, node)
                        node = previous[node]
                    return [*path, start]
                if nxt in inside and nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return component


# ----- the checks ------------------------------------------------------------------------


def test_every_part_has_rules() -> None:
    parts = {part_of(module) for module in modules()} - {ROOT}
    assert parts <= ALLOWED.keys(), f"parts without rules in ALLOWED: {parts - ALLOWED.keys()}"


def test_every_library_import_is_known() -> None:
    """A new third-party import gets a home in THIRD_PARTY_HOMES (or is the stdlib)."""
    unknown = {
        f"{each.importer} imports {each.imported}"
        for each in all_imports()
        if not _is_runyard(each.imported)
        and each.imported.split(".")[0] not in sys.stdlib_module_names
        and each.imported.split(".")[0] not in THIRD_PARTY_HOMES
        and each.imported != "__future__"
    }
    assert not unknown, sorted(unknown)


def test_imports_follow_the_layers() -> None:
    broken = [str(v) for v in violations() if v.rule != "cycle" and not v.known()]
    assert not broken, "\n".join(["imports against docs/DESIGN.md's layers:", *broken])


def test_parts_form_no_import_cycle() -> None:
    edges = part_edges()
    known = {(a, b) for a, b, rule in KNOWN_VIOLATIONS if rule == "cycle"}
    for importer, imported in known:
        edges.get(part_of(importer), {}).pop(part_of(imported), None)
    found = cycles(edges)
    described = []
    for component in found:
        path = shortest_cycle(edges, component)
        steps = [edges[a][b] for a, b in zip(path, path[1:], strict=False)]
        described.append(
            " -> ".join(path)
            + ": "
            + "; ".join(f"{step.importer} imports {step.imported}" for step in steps)
        )
    assert not found, "\n".join(["import cycles between parts (rule 'cycle'):", *described])


def test_known_violations_still_happen() -> None:
    """An entry the code no longer does is removed, so the list only shrinks."""
    seen = {v.key for v in violations()}
    edges = part_edges()
    for importer, imported, rule in KNOWN_VIOLATIONS:
        if rule == "cycle" and part_of(imported) in edges.get(part_of(importer), {}):
            seen.add((importer, imported, rule))
    stale = {
        entry
        for entry in KNOWN_VIOLATIONS
        if not any(
            (key[0] == entry[0] or key[0].startswith(entry[0] + ".")) and key[1:] == entry[1:]
            for key in seen
        )
    }
    assert not stale, f"KNOWN_VIOLATIONS entries the code no longer does: {sorted(stale)}"


# The domain is pure: no I/O, no clock reads (time is passed in).
DOMAIN_FORBIDDEN_MODULES = {
    "asyncio",
    "http",
    "logging",
    "os",
    "pathlib",
    "random",
    "secrets",
    "shutil",
    "signal",
    "socket",
    "sqlite3",
    "subprocess",
    "sys",
    "tempfile",
    "threading",
    "time",
    "urllib",
}
DOMAIN_FORBIDDEN_CALLS = {"now", "utcnow", "today", "open", "fromtimestamp"}


def test_the_domain_does_no_io_and_reads_no_clock() -> None:
    found = []
    for module, path in modules().items():
        if part_of(module) != "runyard.domain":
            continue
        for each in imports_of(module):
            if each.imported.split(".")[0] in DOMAIN_FORBIDDEN_MODULES:
                found.append(f"{module} (line {each.line}) imports {each.imported}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in DOMAIN_FORBIDDEN_CALLS:
                    found.append(f"{module} (line {node.lineno}) calls {ast.unparse(func)}()")
    assert not found, "\n".join(["the domain does I/O or reads the clock:", *found])


# ----- the checker itself ------------------------------------------------------------------


def test_the_check_sees_every_kind_of_import() -> None:
    """Function-level and TYPE_CHECKING imports count; `from pkg import module` names it."""
    source = """
from typing import TYPE_CHECKING
from runyard.store import dashboard, RunStore
from . import render
from ..domain.models import Run

if TYPE_CHECKING:
    from runyard.app import Runyard

def serve() -> None:
    import runyard.api.server
    from runyard.engine.core import _private_thing
"""
    found = [(i.imported, i.names) for i in parse_imports("runyard.web.pages", source)]
    assert found == [
        ("typing", ("TYPE_CHECKING",)),
        ("runyard.store.dashboard", ()),
        ("runyard.store", ("RunStore",)),
        ("runyard.web.render", ()),
        ("runyard.domain.models", ("Run",)),
        ("runyard.app", ("Runyard",)),
        ("runyard.api.server", ()),
        ("runyard.engine.core", ("_private_thing",)),
    ]
    assert len(modules()) > 100


@pytest.mark.parametrize(
    ("importer", "imported", "names", "rule"),
    [
        ("runyard.domain.models", "runyard.store.runs", (), "allowed"),
        ("runyard.api.routes_runs", "runyard.engine.scheduler", (), "allowed"),
        ("runyard.cli.main", "runyard.api.server", (), "allowed"),
        ("runyard.cli.runs", "runyard.store", ("RunStore",), "allowed"),
        ("runyard.web.runs", "runyard.api.errors", (), "allowed"),
        ("runyard.api.routes_runs", "runyard.web.runs", (), "allowed"),
        ("runyard.store.runs", "runyard.engine.events", (), "allowed"),
        ("runyard.web.runs", "runyard.api.routes_logs", ("_helper",), "private"),
        ("runyard.api.routes_runs", "sqlalchemy", (), "third-party home"),
        ("runyard.store.runs", "asyncio", (), "store is synchronous"),
    ],
)
def test_a_forbidden_import_is_named_with_its_rule(
    importer: str, imported: str, names: tuple[str, ...], rule: str
) -> None:
    [found] = violations((Import(importer, imported, names, 7),))
    assert (found.importer, found.imported, found.rule) == (importer, imported, rule)
    assert str(found).startswith(f"{importer} (line 7) imports {imported}: breaks rule {rule!r}")


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("runyard.cli.serve", "runyard.api.server"),  # MODULE_GRANTS
        ("runyard.cli.keys", "runyard.store"),
        ("runyard.web.runs", "runyard.api.deps"),  # API_SHARED_WITH_WEB
        ("runyard.api.app", "runyard.web.routes"),  # the HTTP composition
        ("runyard.api.routes_events", "runyard.engine.events"),  # ENGINE_FACADE
        ("runyard.cli.keys", "runyard.v3.keys"),  # MODULE_GRANTS, one module
        ("runyard.engine.core", "runyard.engine.writer"),  # within a part
    ],
)
def test_an_allowed_import_passes(importer: str, imported: str) -> None:
    assert violations((Import(importer, imported, (), 1),)) == []


def test_cycles_are_found() -> None:
    edges = {
        "a": {"b": Import("a.x", "b.y", (), 1)},
        "b": {"c": Import("b.y", "c.z", (), 2)},
        "c": {"a": Import("c.z", "a.x", (), 3)},
        "d": {"a": Import("d.w", "a.x", (), 4)},
    }
    assert cycles(edges) == [["a", "b", "c"]]
