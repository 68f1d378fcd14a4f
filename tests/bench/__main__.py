"""``python -m tests.bench [--quick] [--only NAME,...] [--runs N] [--json PATH] [--list]``

Runs each scenario ``--runs`` times (default 3; ``--quick`` is one short
smoke run with smaller loads), prints every run's figures, then the median
of each figure with its ratio to the target, and a Markdown summary table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import fnmatch
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import psutil

from tests.bench import (  # noqa: F401  (registers scenarios)
    chat,
    mail,
    mcp,
    queues,
    reservations,
    search,
    sessions,
    shim,
)
from tests.bench.harness import (
    PG_SOCKET,
    PROFILE,
    SCENARIOS,
    Metrics,
    RunContext,
    Scenario,
    fmt,
    fmt_ratio,
    medians,
    metric_label,
    raise_fd_limit,
)


def machine() -> str:
    cores = os.cpu_count()
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{cores} cores ({model}), {mem_kb / 2**20:.1f} GiB, Python {platform.python_version()}"


def also(result: Metrics, scenario: Scenario) -> str:
    shown = {t.metric for t in scenario.targets}
    parts = []
    for key, value in result.items():
        if key in shown:
            continue
        label, unit = metric_label(key)
        parts.append(f"{label} {fmt(value)}{(' ' + unit) if unit else ''}")
    return ", ".join(parts)


def others_busy(seconds: float = 2.0) -> float:
    """CPU the machine spends over ``seconds``, as % of one core."""
    return psutil.cpu_percent(interval=seconds) * (os.cpu_count() or 1)


async def wait_for_quiet(limit_pct: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until the machine is quieter than
    ``limit_pct`` % of a core: figures taken while other work competes for
    the 2 cores say more about that work than about the hub."""
    deadline = time.monotonic() + max_wait
    busy = await asyncio.to_thread(others_busy)
    while busy > limit_pct and time.monotonic() < deadline:
        await asyncio.sleep(3)
        busy = await asyncio.to_thread(others_busy)
    return busy


async def run_scenario(
    scenario: Scenario, runs: int, quick: bool, quiet: tuple[float, float]
) -> dict[str, Any]:
    print(f"\n== {scenario.name}: {scenario.row}", flush=True)
    if scenario.note:
        print(f"   ({scenario.note})")
    missing = scenario.missing()
    if missing:
        print(f"   not measurable yet: the hub lacks {', '.join(missing)}")
        return {"name": scenario.name, "status": "pending", "missing": missing}
    results: list[Metrics] = []
    errors: list[str] = []
    for index in range(runs):
        if quiet[1] > 0:
            busy = await wait_for_quiet(*quiet)
            if busy > quiet[0]:
                print(f"   (the machine stayed busy: {busy:.0f}% of a core before run {index + 1})")
        started = time.monotonic()
        try:
            result = await scenario.run(RunContext(quick=quick, index=index))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            print(f"   run {index + 1}: FAILED {errors[-1][:2000]}", flush=True)
            traceback.print_exc()
            continue
        results.append(result)
        took = time.monotonic() - started
        figures = ", ".join(
            f"{metric_label(k)[0]} {fmt(v)}" for k, v in result.items() if k.endswith("_ms")
        )
        print(f"   run {index + 1} ({took:.0f} s): {figures}", flush=True)
    if not results:
        return {"name": scenario.name, "status": "failed", "errors": errors}
    median = medians(results)
    label = f"median of {len(results)}" if len(results) > 1 else "1 run"
    print(f"   -- {label}:")
    verdicts = []
    for target in scenario.targets:
        value = median.get(target.metric, float("nan"))
        ok = target.ok(value, quick)
        verdicts.append(ok)
        print(f"   {target.describe(value, quick)}")
    print(f"   also: {also(median, scenario)}")
    return {
        "name": scenario.name,
        "status": "ok" if all(verdicts) else "missed",
        "median": median,
        "runs": results,
        "errors": errors,
    }


def summary(reports: list[dict[str, Any]], quick: bool) -> list[str]:
    lines = [
        "| scenario | target | measured | ratio | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for report in reports:
        scenario = SCENARIOS[report["name"]]
        if report["status"] in ("pending", "failed"):
            why = (
                "needs " + ", ".join(report["missing"])
                if report["status"] == "pending"
                else report["errors"][0][:80]
            )
            lines.append(f"| {scenario.row} | | {report['status']}: {why} | | |")
            continue
        if not scenario.targets:
            median = report["median"]
            figures = [f"{fmt(median['rate'])} /s"] if "rate" in median else []
            if "p50_ms" in median:
                figures.append(f"p50 {fmt(median['p50_ms'])} ms")
            if "hub_us_per_op" in median:
                figures.append(f"hub {fmt(median['hub_us_per_op'])} µs CPU/op")
            if "pg_us_per_op" in median:
                figures.append(f"PostgreSQL {fmt(median['pg_us_per_op'])} µs CPU/op")
            lines.append(f"| {scenario.row} | (context, no target) | {', '.join(figures)} | | |")
        for i, target in enumerate(scenario.targets):
            value = report["median"].get(target.metric, float("nan"))
            unit = metric_label(target.metric)[1]
            ratio = target.ratio(value, quick)
            lines.append(
                f"| {scenario.row if i == 0 else ''} | {target.goal(quick)} "
                f"| {fmt(value)} {unit} | {'' if ratio is None else fmt_ratio(ratio)} "
                f"| {'✓' if target.ok(value, quick) else '✗'} |"
            )
    return lines


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short run with small loads")
    parser.add_argument("--only", help="comma-separated scenario names (globs: 'chat*')")
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario (default 3)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--profile", action="store_true", help="sample the hubs with py-spy and print hot spots"
    )
    parser.add_argument(
        "--pg-socket",
        metavar="DIR",
        help="hubs connect to PostgreSQL over its Unix socket in DIR "
        "(e.g. /var/run/postgresql) instead of TCP",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=90,
        help="before each run, wait up to this many seconds for the machine to be idle "
        "(under 30%% of a core busy); 0 to start at once",
    )
    args = parser.parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            state = f"  [needs {', '.join(s.missing())}]" if s.missing() else ""
            print(f"{s.name:14} {s.row}{state}")
        return 0
    runs = args.runs or (1 if args.quick else 3)
    chosen = list(SCENARIOS.values())
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        chosen = [s for s in chosen if any(fnmatch.fnmatch(s.name, w) for w in wanted)]
        if not chosen:
            parser.error(f"no scenario matches {args.only!r}; see --list")
    raise_fd_limit()
    if args.pg_socket:
        PG_SOCKET["dir"] = args.pg_socket
    started = datetime.datetime.now(datetime.UTC)
    print(f"beadhub benchmarks, {started:%Y-%m-%d %H:%M} UTC, {machine()}")
    print(f"command: python -m tests.bench {' '.join(argv)}".rstrip())
    reports = []
    for s in chosen:
        if args.profile:
            PROFILE["name"] = s.name
        reports.append(await run_scenario(s, runs, args.quick, (30.0, args.quiet_wait)))
    lines = summary(reports, args.quick)
    print("\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": started.isoformat(),
                    "machine": machine(),
                    "argv": argv,
                    "reports": reports,
                },
                indent=2,
            )
        )
    # A missed target is a finding, not an error: only a scenario that could
    # not run makes the exit status non-zero.
    return 1 if any(r["status"] == "failed" for r in reports) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
