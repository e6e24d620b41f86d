"""CLI benchmark: wall time of `runyard tasks` against a running daemon.

One daemon serves a copy of the example config (the one `make run` serves) on
a free port. The command is the installed `runyard` script next to this
interpreter, run from the config's directory with no flags, as a user types
it after `make run`. The baseline, measured in the same run and interleaved
with it so a busy machine slows both alike, is `python3 -c pass` on the same
interpreter: the cost of starting any Python program here. Target: the median
of `runyard tasks` is at most 0.3 s. Not a test: it prints a table and writes
bench/results/cli.json.

    .venv/bin/python bench/cli.py              # 30 rounds
    .venv/bin/python bench/cli.py --rounds 5   # smoke run
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# Run as a script, this file's folder comes first on sys.path, where bench/http.py
# would shadow the standard library's `http` package. Keep the folder, but
# after the standard library.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
sys.path.append(str(BENCH))

import urllib.request  # noqa: E402

from _common import free_port, machine, merge_report  # noqa: E402

RESULTS = ROOT / "bench" / "results"
EXAMPLE = ROOT / "runyard" / "examples" / "runyard.toml"
RUNYARD = Path(sys.executable).parent / "runyard"
TARGET_SECONDS = 0.3
STARTUP_DEADLINE = 30.0


def start_daemon(home: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    text = re.sub(r"(?m)^port = \d+$", f"port = {port}", EXAMPLE.read_text(encoding="utf-8"))
    (home / "runyard.toml").write_text(text, encoding="utf-8")
    env = user_environment()
    with (home / "daemon.log").open("wb") as log:
        process = subprocess.Popen(
            [str(RUNYARD), "serve"], cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return process, port
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the daemon did not start:\n{(home / 'daemon.log').read_text()}")


def user_environment() -> dict[str, str]:
    """This environment without RUNYARD_* and without PYTHONDONTWRITEBYTECODE.

    A sandbox or CI shell may forbid bytecode caches; a user's shell does not,
    and without them every run re-compiles the CLI's modules from source.
    """
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RUNYARD_") and k != "PYTHONDONTWRITEBYTECODE"
    }


def measure(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run `argv`; return its wall time and its CPU time (user + system), in seconds."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    errors = process.stderr.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{argv} failed: {errors.decode(errors='replace')}")
    return elapsed, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    # The interpreter the CLI runs on (not a version manager's shim, which is a
    # shell script of its own).
    python3 = str(Path(sys.executable).parent / "python3")
    home = Path(tempfile.mkdtemp(prefix="runyard-bench-cli-"))
    process, _port = start_daemon(home)
    env = user_environment()
    # pip compiles a package's bytecode when it installs it, and Python caches
    # it on first import; byte-compile here too, so the rounds measure what a
    # user's second `runyard tasks` costs, not a fresh compile each time.
    compileall.compile_dir(str(ROOT / "runyard"), quiet=1)
    try:
        measure([str(RUNYARD), "tasks"], home, env)  # warm the file cache once
        baseline: list[tuple[float, float]] = []
        tasks: list[tuple[float, float]] = []
        for _ in range(args.rounds):
            baseline.append(measure([python3, "-c", "pass"], home, env))
            tasks.append(measure([str(RUNYARD), "tasks"], home, env))
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)
    report = summarise(baseline, tasks, args.rounds)
    print_table(report)
    merge_report(RESULTS / "cli.json", report)


def summarise(
    baseline: list[tuple[float, float]], tasks: list[tuple[float, float]], rounds: int
) -> dict[str, Any]:
    walls = [wall for wall, _cpu in tasks]
    base_walls = [wall for wall, _cpu in baseline]
    overhead = statistics.median(t - b for t, b in zip(walls, base_walls, strict=True))
    return {
        "machine": machine(),
        "rounds": rounds,
        "baseline_python3_c_pass": _stats(base_walls),
        "runyard_tasks": _stats(walls),
        "runyard_tasks_minus_baseline_median_s": round(overhead, 4),
        # CPU time moves less than wall time when other work shares the cores.
        "cpu_python3_c_pass": _stats([cpu for _wall, cpu in baseline]),
        "cpu_runyard_tasks": _stats([cpu for _wall, cpu in tasks]),
        "target_median_seconds": TARGET_SECONDS,
        "met": statistics.median(walls) <= TARGET_SECONDS,
        "loadavg_1min": os.getloadavg()[0],
    }


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_s": round(statistics.median(ordered), 4),
        "min_s": round(ordered[0], 4),
        "p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 4),
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['rounds']} rounds, load average {report['loadavg_1min']:.2f}")
    print(f"{'command':<24} {'median':>8} {'min':>8} {'p90':>8}   {'CPU median':>10}")
    for name, wall, cpu in (
        ("python3 -c pass", report["baseline_python3_c_pass"], report["cpu_python3_c_pass"]),
        ("runyard tasks", report["runyard_tasks"], report["cpu_runyard_tasks"]),
    ):
        print(
            f"{name:<24} {wall['median_s']:>7.3f}s {wall['min_s']:>7.3f}s {wall['p90_s']:>7.3f}s"
            f"   {cpu['median_s']:>9.3f}s"
        )
    print(
        "runyard tasks minus the baseline, median of rounds: "
        f"{report['runyard_tasks_minus_baseline_median_s']:.3f}s"
    )
    verdict = "met" if report["met"] else "NOT met"
    print(f"target: runyard tasks median <= {TARGET_SECONDS} s: {verdict}")


if __name__ == "__main__":
    main()
