"""Dashboard benchmark: every page's server time and first paint with a million runs.

A data dir with 1,000,000 runs over a year (bench/_seed.py; cached under
bench/results/.cache by seed version and day) is served by a real daemon
(`runyard serve`). The benchmark signs in with the API token like a person,
then for each dashboard URL:

- server time: N sequential GETs over one keep-alive connection (httpx),
  client-measured, p50/p95/max; a Server-Timing header is summarised too
  when the daemon sends one;
- first contentful paint in headless Chromium (Playwright driving
  /usr/bin/chromium): `performance.getEntriesByName('first-contentful-paint')`
  over M fresh loads, median and p95.

Baselines in the same run: `GET /health` on the same daemon (server time),
and a bare FastAPI app serving a static HTML page of the overview's size
(server time and first paint); the report gives each page's ratio to them.
Targets (issue 11): server p95 < 100 ms, FCP < 500 ms.

It also measures `GET /api/runs` with every filter and sort a page would use
(limit 50), with SQLite's EXPLAIN QUERY PLAN of each query, and the run page
while a run prints 10,000 log lines a second: the longest gap between
animation frames (a requestAnimationFrame probe), long tasks, and the
page's DOM node count over time, against the same probe on the static page.

A page the daemon does not serve yet (404) is reported "missing".

    .venv/bin/python bench/dashboard.py                  # 1,000,000 runs (~3 min, ~1.5 GB cache)
    .venv/bin/python bench/dashboard.py --runs 100000 --requests 20 --loads 3  # smoke run
"""

from __future__ import annotations

import argparse
import html.parser
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# As in bench/http.py: this folder must not shadow the standard library.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
sys.path.append(str(BENCH))

import httpx  # noqa: E402
from _common import Daemon, free_port, machine, merge_report  # noqa: E402
from _dashboard_browser import Browser  # noqa: E402
from _seed import Seeded, seeded  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# Made with `createdb -h 127.0.0.1 -U postgres dashbench`; its schema is replaced.
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/dashbench"
CACHE = RESULTS / ".cache"
TOKEN = "dashboard-bench-token-0123456789"
TARGET_SERVER_P95_MS = 100.0
TARGET_FCP_MS = 500.0
FLOOD_LINES_PER_S = 10_000
FLOOD_SECONDS = 40
FLOOD_PROBE_SECONDS = 15


# ----- the daemon's config -----------------------------------------------------


def write_config(work: Path, data_dir: Path, port: int, seed: Seeded) -> Path:
    flood = work / "flood.py"
    flood.write_text(FLOOD_SCRIPT, encoding="utf-8")
    lines = [
        "[daemon]",
        f"port = {port}",
        f'data_dir = "{data_dir}"',
        'shutdown_timeout = "5s"',
        "",
    ]
    for account in ("acme", "globex"):
        lines += [f"[accounts.{account}]", "max_concurrent_runs = 2", ""]
    for task in seed.tasks:
        lines += [f"[tasks.{task.name}]", 'run = "true"']
        if task.cron:
            lines.append(f'cron = "{task.cron}"')
        if task.replicas > 1:
            lines.append(f"replicas = {task.replicas}")
        if task.has_params:
            lines += ["", f"[[tasks.{task.name}.params]]", 'name = "who"', 'default = "world"']
        lines.append("")
    lines += [
        "[tasks.flood]",
        'description = "Print 10,000 lines a second."',
        f'run = "{sys.executable} {flood} {FLOOD_LINES_PER_S} {FLOOD_SECONDS}"',
        "",
    ]
    config = work / "runyard.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    return config


FLOOD_SCRIPT = """\
import sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
started, n = time.monotonic(), 0
out = sys.stdout
while (elapsed := time.monotonic() - started) < seconds:
    due = int(elapsed * rate)
    while n < due:
        out.write(f"{n:08d} \\x1b[36mflood\\x1b[0m a line of the log flood, {elapsed:.3f} s in\\n")
        n += 1
    out.flush()
    time.sleep(0.005)
"""


# ----- the daemon ------------------------------------------------------------------


def _environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["RUNYARD_TOKEN"] = TOKEN
    return env


# ----- signing in ----------------------------------------------------------------


class _FormParser(html.parser.HTMLParser):
    """The first form of a page: its action and inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.inputs: list[dict[str, str]] = []
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and not self._done:
            self._in_form = True
            self.action = values.get("action", "")
        elif tag == "input" and self._in_form:
            self.inputs.append(values)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form, self._done = False, True


def sign_in(client: httpx.Client) -> str | None:
    """Sign in through /login's form with the API token; return why not, or None."""
    page = client.get("/login")
    if page.status_code == 404:
        return "missing: GET /login answered 404"
    form = _FormParser()
    form.feed(page.text)
    fields = {i["name"]: i.get("value", "") for i in form.inputs if i.get("name")}
    secret = [i["name"] for i in form.inputs if i.get("type") == "password" and i.get("name")]
    if not secret:
        return f"no password field in /login's form (inputs: {sorted(fields)})"
    fields[secret[0]] = TOKEN
    answer = client.post(form.action or "/login", data=fields)
    if answer.status_code >= 400 or not client.cookies:
        return f"sign-in answered {answer.status_code} and set no cookie: {answer.text[:200]}"
    return None


# ----- server time ---------------------------------------------------------------


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def _server_timing(header: str) -> dict[str, float]:
    """Parse `name;dur=1.2, other;dur=3` into {name: ms}."""
    metrics = {}
    for part in header.split(","):
        name, *params = [piece.strip() for piece in part.split(";")]
        for param in params:
            if param.startswith("dur="):
                try:
                    metrics[name] = float(param[4:])
                except ValueError:
                    continue
    return metrics


def server_time(
    client: httpx.Client, path: str, requests: int, budget_s: float, *, html: bool = False
) -> dict[str, Any]:
    """GET `path` up to `requests` times (stopping after `budget_s`); return latency in ms.

    `html`: a page, so an answer that is not HTML means the page is missing.
    """
    times: list[float] = []
    timings: dict[str, list[float]] = {}
    status, size = 0, 0
    deadline = time.perf_counter() + budget_s
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        status, size = answer.status_code, len(answer.content)
        if status == 404 or (html and "text/html" not in answer.headers.get("content-type", "")):
            # No such route (yet): the API's 404, or its 401 problem for an unknown path.
            return {"path": path, "status": status, "missing": True}
        for name, ms in _server_timing(answer.headers.get("server-timing", "")).items():
            timings.setdefault(name, []).append(ms)
        if time.perf_counter() > deadline:
            break
    result: dict[str, Any] = {
        "path": path,
        "status": status,
        "bytes": size,
        "requests": len(times),
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(_percentile(times, 0.95), 2),
        "max_ms": round(max(times), 2),
    }
    if timings:
        result["server_timing_p95_ms"] = {
            name: round(_percentile(values, 0.95), 2) for name, values in timings.items()
        }
    return result


# ----- the bare app baseline ----------------------------------------------------------

BASELINE_APP = """\
import sys
import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

port, size = int(sys.argv[1]), int(sys.argv[2])
row = "<tr><td>run</td><td>task</td><td>ended</td><td>success</td><td>1.2 s</td></tr>\\n"
body = "<!doctype html><html><head><meta charset=utf-8><title>static</title></head><body>"
body += "<h1>Runs</h1><table>" + row * max(1, (size - len(body) - 30) // len(row)) + "</table>"
body += "</body></html>"
app = FastAPI()

@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    return body

uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="asyncio")
"""


def start_baseline(work: Path, size: int) -> tuple[subprocess.Popen[bytes], str]:
    script = work / "baseline_app.py"
    script.write_text(BASELINE_APP, encoding="utf-8")
    port = free_port()
    process = subprocess.Popen([sys.executable, str(script), str(port), str(size)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the baseline app did not answer within 30 s")


# ----- the run list API and its plans ----------------------------------------------


def api_queries(seed: Seeded) -> dict[str, dict[str, Any]]:
    """The run-list queries a page makes: name -> query parameters (limit 50)."""
    busy, quiet = seed.tasks[0].name, seed.tasks[-1].name
    queries: dict[str, dict[str, Any]] = {"default": {}}
    for field in ("task_name", "status", "start_at", "exit_code", "duration", "created_at"):
        for direction in ("asc", "desc"):
            queries[f"sort {field} {direction}"] = {
                "sort_field": field,
                "sort_direction": direction,
            }
    queries |= {
        "task busy": {"task_name": busy},
        "task quiet": {"task_name": quiet},
        "status failed": {"status": "failed"},
        "status crashed (rare)": {"status": "crashed"},
        "status running (none)": {"status": "running"},
        "status ended": {"status": "ended"},
        "task busy + failed": {"task_name": busy, "status": "failed"},
        "task quiet + crashed": {"task_name": quiet, "status": "crashed"},
        "failed by duration desc": {"status": "failed", "sort_field": "duration"},
        "success by duration desc": {"status": "success", "sort_field": "duration"},
        "ended by start_at desc": {"status": "ended", "sort_field": "start_at"},
        "ended by task_name asc": {
            "status": "ended",
            "sort_field": "task_name",
            "sort_direction": "asc",
        },
        "failed by exit_code desc": {"status": "failed", "sort_field": "exit_code"},
        "crashed by start_at asc": {
            "status": "crashed",
            "sort_field": "start_at",
            "sort_direction": "asc",
        },
        "task busy + failed by duration": {
            "task_name": busy,
            "status": "failed",
            "sort_field": "duration",
        },
        "search run id prefix": {"search": seed.newest_run_id[:10]},
        "search run id middle": {"search": seed.newest_run_id[12:20].lower()},
        "search exec id": {"search": "exec-"},
        "search no match": {"search": "no-such-thing"},
        "search task name": {"search": "backup-db"},
        "search end reason": {"search": "crash"},
        "page 2": {"offset": 50},
        "offset 10,000": {"offset": 10_000},
        "offset 500,000": {"offset": 500_000},
        "limit 1000": {"limit": 1000},
    }
    return queries


def run_query(params: dict[str, Any]) -> Any:
    """Return the RunQuery that GET /api/runs makes of `params`."""
    from runyard.domain.models import EndReason, RunStatus
    from runyard.domain.queries import RunQuery, SortDirection, SortField

    status = params.get("status")
    return RunQuery(
        task_name=params.get("task_name"),
        status=RunStatus(status) if status in {s.value for s in RunStatus} else None,
        end_reason=EndReason(status) if status in {r.value for r in EndReason} else None,
        search=params.get("search"),
        sort_field=SortField(params.get("sort_field", "created_at")),
        sort_direction=SortDirection(params.get("sort_direction", "desc")),
        limit=int(params.get("limit", 50)),
        offset=int(params.get("offset", 0)),
    )


def query_plan(db: Path, params: dict[str, Any]) -> list[str]:
    """Return SQLite's EXPLAIN QUERY PLAN of the page and total queries for `params`."""
    import sqlalchemy as sa

    from runyard.store.runs import RunStore

    query = run_query(params)
    engine = sa.create_engine(f"sqlite:///file:{db}?mode=ro&uri=true")
    store = RunStore(engine)
    plans = []
    try:
        statements = store.list_statements(query)
        with engine.connect() as connection:
            for label, statement in zip(("page", "total"), statements, strict=True):
                compiled = statement.compile(
                    dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
                )
                values = tuple(compiled.params[name] for name in compiled.positiontup or ())
                rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled.string, values)
                plans.append(f"{label}: " + " / ".join(str(row[-1]) for row in rows))
    finally:
        engine.dispose()
    return plans


# ----- main ------------------------------------------------------------------------


def page_paths(seed: Seeded) -> dict[str, str]:
    busy = seed.tasks[0].name
    today = datetime.now(UTC)
    week_ago = today - timedelta(days=7)
    return {
        "login": "/login",
        "overview": "/",
        "runs": "/runs",
        "runs filtered": f"/runs?task_name={busy}&status=failed",
        "runs page 100": "/runs?offset=5000",
        "runs by trigger": "/runs?triggered_by=api",
        "runs of a week": f"/runs?created_from={week_ago:%Y-%m-%d}&created_to={today:%Y-%m-%d}",
        "runs search": f"/runs?search={seed.newest_run_id[:10]}",
        "run": f"/runs/{seed.newest_run_id}",
        "run with data": f"/runs/{seed.data_run_id}",
        "run with 100k-line log": f"/runs/{seed.big_log_run_id}",
        "task": f"/tasks/{busy}",
        "accounts": "/accounts",
        "daemon": "/daemon",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50, help="GETs per page")
    parser.add_argument("--loads", type=int, default=20, help="browser loads per page")
    parser.add_argument("--out", type=Path, default=RESULTS / "dashboard.json")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument(
        "--only",
        choices=["search"],
        help="search: only the run search (page, API, store on SQLite and PostgreSQL)",
    )
    parser.add_argument(
        "--postgres",
        default=POSTGRES_URL,
        help="a database of its own for the run-list plans on PostgreSQL ('' to skip)",
    )
    args = parser.parse_args()

    seed = seeded(args.cache, args.runs)
    print(
        f"data: {seed.runs:,} runs, "
        + ("from the cache" if seed.cached else f"seeded in {seed.seconds:.1f} s")
    )
    if args.only == "search":
        report = {f"search_{seed.runs}": search_only(args, seed)}
        merge_report(args.out, report)
        print(f"wrote {args.out}")
        return
    with tempfile.TemporaryDirectory(prefix="runyard-dashboard-bench-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        started = time.perf_counter()
        shutil.copytree(seed.data_dir, data_dir)
        print(f"copied the data dir in {time.perf_counter() - started:.1f} s")
        port = free_port()
        config = write_config(work, data_dir, port, seed)
        daemon = Daemon.start(work, config, port, _environ(), timeout_s=120)
        try:
            report = measure(args, seed, work, daemon, data_dir)
        finally:
            code, _ = daemon.stop(60)
        report["daemon_exit_code"] = code
    if args.postgres:
        report["postgres_api_runs"] = postgres_plans(args.postgres, seed)
    report["machine"] = machine()
    merge_report(args.out, report)
    print(f"wrote {args.out}")


def measure(
    args: argparse.Namespace, seed: Seeded, work: Path, daemon: Daemon, data_dir: Path
) -> dict[str, Any]:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    report: dict[str, Any] = {
        "runs": seed.runs,
        "seed_seconds": round(seed.seconds, 1) if not seed.cached else None,
        "targets": {"server_p95_ms": TARGET_SERVER_P95_MS, "fcp_ms": TARGET_FCP_MS},
    }
    with httpx.Client(base_url=daemon.url, timeout=60) as client:
        problem = sign_in(client)
        report["sign_in"] = problem or "ok"
        print(f"sign in: {problem or 'ok'}")
        health = server_time(client, "/health", args.requests, 30)
        pages = {
            name: server_time(client, path, args.requests, 30, html=True)
            for name, path in page_paths(seed).items()
            if path != "/login"
        }
        cookies = [
            {"name": c.name, "value": c.value or "", "url": daemon.url} for c in client.cookies.jar
        ]
    with httpx.Client(base_url=daemon.url, timeout=60) as signed_out:
        pages = {"login": server_time(signed_out, "/login", args.requests, 30, html=True), **pages}
    sizes = [page["bytes"] for page in pages.values() if not page.get("missing")]
    overview = pages["overview"]
    size = overview["bytes"] if not overview.get("missing") else (max(sizes) if sizes else 20_000)
    baseline_process, baseline_url = start_baseline(work, size)
    try:
        with httpx.Client(base_url=baseline_url, timeout=60) as client:
            bare = server_time(client, "/", args.requests, 30)
        with Browser(cookies) as browser:
            bare_fcp = browser.first_paint(baseline_url + "/", args.loads)
            for name, path in page_paths(seed).items():
                if pages[name].get("missing") or path == "/login":
                    continue
                pages[name]["fcp"] = browser.first_paint(daemon.url + path, args.loads)
            bare_probe = browser.responsiveness(baseline_url + "/", FLOOD_PROBE_SECONDS // 3)
            report["log_flood"] = log_flood(daemon.url, bearer, browser, bare_probe)
        with Browser([]) as signed_out_browser:
            if not pages["login"].get("missing"):
                pages["login"]["fcp"] = signed_out_browser.first_paint(
                    daemon.url + "/login", args.loads
                )
    finally:
        baseline_process.terminate()
        baseline_process.wait()
    for page in pages.values():
        if page.get("missing"):
            continue
        page["ratio_p95_to_health"] = round(page["p95_ms"] / health["p95_ms"], 1)
        page["ratio_p95_to_static"] = round(page["p95_ms"] / bare["p95_ms"], 1)
        if "fcp" in page:
            page["ratio_fcp_to_static"] = round(page["fcp"]["p95_ms"] / bare_fcp["p95_ms"], 2)
    report["baseline"] = {"health": health, "static_page": {**bare, "fcp": bare_fcp}}
    report["pages"] = pages
    report["api_runs"] = api_runs(daemon.url, bearer, seed, args.requests, data_dir)
    print_table(report)
    return report


def api_runs(
    url: str,
    bearer: dict[str, str],
    seed: Seeded,
    requests: int,
    data_dir: Path,
    prefix: str = "",
) -> dict[str, Any]:
    results = {}
    with httpx.Client(base_url=url, timeout=60, headers=bearer) as client:
        for name, params in api_queries(seed).items():
            if not name.startswith(prefix):
                continue
            query = "&".join(f"{key}={value}" for key, value in params.items())
            result = server_time(client, "/api/runs" + (f"?{query}" if query else ""), requests, 10)
            try:
                result["plan"] = query_plan(data_dir / "runyard.db", params)
            except (AttributeError, sqlite3.Error) as exc:
                result["plan"] = [f"unavailable: {exc}"]
            results[name] = result
    return results


def search_only(args: argparse.Namespace, seed: Seeded) -> dict[str, Any]:
    """The run search alone: the search page and GET /api/runs?search= on a daemon, and
    RunStore.list_runs of each search on the SQLite file and on PostgreSQL."""
    report: dict[str, Any] = {"runs": seed.runs}
    with tempfile.TemporaryDirectory(prefix="runyard-dashboard-bench-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        shutil.copytree(seed.data_dir, data_dir)
        port = free_port()
        daemon = Daemon.start(
            work, write_config(work, data_dir, port, seed), port, _environ(), timeout_s=120
        )
        try:
            with httpx.Client(base_url=daemon.url, timeout=60) as client:
                report["sign_in"] = sign_in(client) or "ok"
                report["health"] = server_time(client, "/health", args.requests, 30)
                path = page_paths(seed)["runs search"]
                report["page"] = server_time(client, path, args.requests, 30, html=True)
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            report["api_runs"] = api_runs(
                daemon.url, bearer, seed, args.requests, data_dir, prefix="search"
            )
        finally:
            report["daemon_exit_code"] = daemon.stop(60)[0]
        report["store_sqlite"] = store_search(f"sqlite:///{data_dir / 'runyard.db'}", seed, args)
    if args.postgres:
        from _postgres import seed_postgres

        seconds = seed_postgres(args.postgres, seed.data_dir / "runyard.db", seed.data_dir.name)
        print("postgres: " + (f"seeded in {seconds:.1f} s" if seconds else "seeded before"))
        report["store_postgres"] = store_search(args.postgres, seed, args)
    report["machine"] = machine()
    print(
        f"\n{seed.runs:,} runs; search page p50 {report['page'].get('p50_ms')} ms,"
        f" p95 {report['page'].get('p95_ms')} ms"
    )
    print(
        f"{'search':28} {'API p50':>8} {'API p95':>8} {'SQLite p95':>10} {'PG p95':>8} {'total':>8}"
    )
    for name, result in report["api_runs"].items():
        lite = report["store_sqlite"][name]
        postgres = report.get("store_postgres", {}).get(name, {})
        print(
            f"{name:28} {result.get('p50_ms', '-'):>8} {result.get('p95_ms', '-'):>8}"
            f" {lite['p95_ms']:>10} {postgres.get('p95_ms', '-'):>8} {lite['total']:>8}"
        )
    return report


def store_search(url: str, seed: Seeded, args: argparse.Namespace) -> dict[str, Any]:
    """Time RunStore.list_runs for each search query (limit 50): p50, p95, and the total."""
    from runyard.store import database
    from runyard.store.runs import RunStore

    engine = database.create_engine(database.database_url(Path("."), {"RUNYARD_DATABASE_URL": url}))
    store = RunStore(engine)
    results: dict[str, Any] = {}
    try:
        for name, params in api_queries(seed).items():
            if not name.startswith("search"):
                continue
            query = run_query(params)
            times, total = [], 0
            for _ in range(args.requests):
                started = time.perf_counter()
                _page, total = store.list_runs(query)
                times.append((time.perf_counter() - started) * 1000)
            results[name] = {
                "search": params["search"],
                "total": total,
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(_percentile(times, 0.95), 2),
            }
    finally:
        store.close()
    return results


def postgres_plans(url: str, seed: Seeded) -> dict[str, Any]:
    """Seed PostgreSQL with the same runs; return each run-list query's plan and time there."""
    from _postgres import explain_analyze, seed_postgres

    seconds = seed_postgres(url, seed.data_dir / "runyard.db", seed.data_dir.name)
    print("postgres: " + (f"seeded in {seconds:.1f} s" if seconds else "seeded before"))
    queries = {name: run_query(params) for name, params in api_queries(seed).items()}
    results = explain_analyze(url, queries)
    print(f"\n{'PostgreSQL (execution)':34} {'page ms':>8} {'total ms':>8}  plan")
    for name, result in results.items():
        plan = " / ".join(result["page_plan"][:3])
        print(f"{name:34} {result['page_ms']:>8} {result['total_ms']:>8}  {plan[:90]}")
    return {"seed_seconds": round(seconds, 1) or None, "queries": results}


def log_flood(
    url: str, bearer: dict[str, str], browser: Browser, bare: dict[str, Any]
) -> dict[str, Any]:
    """Open the page of a run printing FLOOD_LINES_PER_S lines a second; probe its main thread."""
    with httpx.Client(base_url=url, timeout=30, headers=bearer) as client:
        answer = client.post("/api/tasks/flood/run")
        answer.raise_for_status()
        run_id = answer.json()["id"]
        deadline = time.monotonic() + 20
        while client.get(f"/api/runs/{run_id}").json()["status"] != "running":
            if time.monotonic() > deadline:
                raise RuntimeError("the flood run did not start within 20 s")
            time.sleep(0.1)
        time.sleep(2)  # some log before the page opens
        try:
            if client.get(f"/runs/{run_id}", headers={}).status_code == 404:
                return {"run_page": "missing", "baseline_static_page": bare}
            probe = browser.responsiveness(f"{url}/runs/{run_id}", FLOOD_PROBE_SECONDS)
            lines = client.get(f"/api/runs/{run_id}/log", params={"limit": 1}).json()
        finally:
            client.post(f"/api/runs/{run_id}/stop")
    return {
        "lines_per_s": FLOOD_LINES_PER_S,
        "log_lines_at_end": lines.get("total_lines") if isinstance(lines, dict) else None,
        "run_page": probe,
        "baseline_static_page": bare,
    }


def print_table(report: dict[str, Any]) -> None:
    health = report["baseline"]["health"]
    bare = report["baseline"]["static_page"]
    print(
        f"\nbaselines: /health p95 {health['p95_ms']} ms; static page p95 {bare['p95_ms']} ms,"
        f" FCP p95 {bare['fcp']['p95_ms']} ms"
    )
    columns = ("status", "KB", "p50 ms", "p95 ms", "FCP p95", "x static")
    print(f"{'page':28} " + " ".join(f"{column:>8}" for column in columns))
    for name, page in report["pages"].items():
        if page.get("missing"):
            print(f"{name:28} {'missing (' + str(page['status']) + ')':>17}")
            continue
        fcp = page.get("fcp", {}).get("p95_ms", "-")
        print(
            f"{name:28} {page['status']:>8} {page['bytes'] / 1024:>8.1f} {page['p50_ms']:>8}"
            f" {page['p95_ms']:>8} {fcp:>8} {page['ratio_p95_to_static']:>8}"
        )
    print(f"\n{'GET /api/runs':34} {'p50 ms':>8} {'p95 ms':>8}  plan")
    for name, result in report["api_runs"].items():
        plan = "; ".join(result.get("plan", []))
        print(
            f"{name:34} {result.get('p50_ms', '-'):>8} {result.get('p95_ms', '-'):>8}  {plan[:90]}"
        )
    flood = report.get("log_flood", {})
    print(f"\nlog flood: {json.dumps(flood)[:600]}")


if __name__ == "__main__":
    main()
