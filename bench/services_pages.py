"""Services pages benchmark: the dashboard's /services with 100 healthy services.

A real daemon (`runyard serve`) with 100 services of one instance each
(`exec sleep`, an HTTP health check every 10 s against a listener this
script runs, as bench/services_daemon.py). Once every instance is healthy,
the script signs in through /login like a person and times N sequential GETs
over one keep-alive connection of each page: `/services`, `/services/s000`,
the overview `/` (which counts the services ready), and the baseline
`GET /health` on the same daemon, interleaved round by round so a busy
machine weighs on each alike. It reports p50 and p95 per page and the p50
ratio to /health.

Not a test: it prints a table and merges its results into
bench/results/services_pages.json.

    .venv/bin/python bench/services_pages.py                          # 100 services, 200 GETs
    .venv/bin/python bench/services_pages.py --services 10 --requests 30   # smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would stand in for the standard library's `http` package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import httpx  # noqa: E402

ROOT = BENCH.parent
sys.path.append(str(BENCH))

from _common import free_port, machine, merge_report  # noqa: E402
from services_daemon import TOKEN, config_text, listener  # noqa: E402

PAGES = ["/health", "/services", "/services/s000", "/"]


def sign_in(client: httpx.Client) -> None:
    form = client.get("/login").text
    login_token = re.search(r'name="login_token" value="([^"]+)"', form)
    assert login_token is not None, "no login_token in /login's form"
    answer = client.post(
        "/login", data={"token": TOKEN, "login_token": login_token.group(1), "next": "/"}
    )
    assert answer.status_code == 303, answer.text


def wait_healthy(url: str, services: int, process: subprocess.Popen[bytes]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    deadline = time.monotonic() + 60 + services
    while True:
        assert process.poll() is None, "the daemon exited"
        assert time.monotonic() < deadline, "the services did not all get healthy"
        try:
            body = httpx.get(f"{url}/api/services", headers=headers, timeout=5).json()
            states = [i["state"] for s in body["services"] for i in s["instances"]]
            if states.count("healthy") == services:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


def measure(work: Path, services: int, requests: int, target: str) -> dict[str, dict[str, float]]:
    port = free_port()
    config = work / "runyard.toml"
    config.write_text(config_text(port, work / "data", services, target), encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")},
        "RUNYARD_TOKEN": TOKEN,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "runyard", "--config", str(config), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    timings: dict[str, list[float]] = {page: [] for page in PAGES}
    try:
        wait_healthy(url, services, process)
        with httpx.Client(base_url=url, timeout=10, follow_redirects=False) as client:
            sign_in(client)
            for page in PAGES:  # warm up each page once
                assert client.get(page).status_code == 200, page
            for _ in range(requests):
                for page in PAGES:
                    started = time.perf_counter()
                    response = client.get(page)
                    timings[page].append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (page, response.status_code)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    base = statistics.median(timings["/health"])
    return {
        page: {
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(statistics.quantiles(values, n=20)[18], 2),
            "p50_ratio_to_health": round(statistics.median(values) / base, 2),
        }
        for page, values in timings.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200, help="GETs per page")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "services_pages.json"
    )
    args = parser.parse_args()
    target = listener()
    with tempfile.TemporaryDirectory(prefix="runyard-bench-services-pages-") as tmp:
        pages = measure(Path(tmp), args.services, args.requests, target)
    merge_report(
        args.out,
        {
            "machine": machine(),
            "pages": {"services": args.services, "requests": args.requests, "pages": pages},
        },
    )
    print(f"dashboard, {args.services} healthy services, {args.requests} GETs per page:")
    print(f"  {'page':<18}{'p50 ms':>10}{'p95 ms':>10}{'p50 / health':>14}")
    for page, figures in pages.items():
        print(
            f"  {page:<18}{figures['p50_ms']:>10.2f}{figures['p95_ms']:>10.2f}"
            f"{figures['p50_ratio_to_health']:>14.2f}"
        )


if __name__ == "__main__":
    main()
