#!/usr/bin/env python3
"""Summarizes larder-load JSON results (ghz-shaped) into the comparison
tables of docs/PERFORMANCE.md. Usage: summarize.py RESULTS_DIR"""

import json
import pathlib
import sys

P99_BUDGET_NS = 10_000_000  # max throughput counts only runs with p99 < 10 ms


def pct(run, p):
    for d in run["latencyDistribution"]:
        if abs(d["percentage"] - p) < 1e-9:
            return d["latency"]
    return None


def behind(run):
    """A run whose p50 is over a second fell behind its rate: its p50
    against another's means nothing."""
    return pct(run, 50) > 1_000_000_000


def us(ns):
    return f"{ns / 1000:.0f}" if ns is not None else "-"


def main():
    results = pathlib.Path(sys.argv[1])
    runs = {}
    for path in sorted(results.glob("*.json")):
        if path.name == "rss.json":
            continue
        run = json.loads(path.read_text())
        system, shape, mode = path.stem.split(".", 2)
        ok = run["statusCodeDistribution"].get("OK", 0) + run["statusCodeDistribution"].get("200", 0)
        run["errors"] = run["count"] - ok
        runs.setdefault(shape, {}).setdefault(system, {})[mode] = run

    systems = ["larder-grpc", "larder-http", "feast-http", "floor", "floor-hgetall"]
    print("Max throughput with p99 < 10 ms (closed loop; best concurrency)")
    print(f"{'shape':<8} {'system':<12} {'conc':>5} {'rps':>9} {'p50 us':>9} {'p99 us':>9}")
    best = {}
    for shape in ["1x50", "1x250", "100x50"]:
        for system in systems:
            candidates = [
                (mode, r)
                for mode, r in runs.get(shape, {}).get(system, {}).items()
                if mode.startswith("c") and r["errors"] == 0 and pct(r, 99) is not None and pct(r, 99) < P99_BUDGET_NS
            ]
            if not candidates:
                continue
            mode, r = max(candidates, key=lambda mr: mr[1]["rps"])
            best[(shape, system)] = r
            print(f"{shape:<8} {system:<12} {mode[1:]:>5} {r['rps']:>9.0f} {us(pct(r, 50)):>9} {us(pct(r, 99)):>9}")
    print()
    print("Ratios of max throughput (p99 < 10 ms)")
    for shape in ["1x50", "1x250", "100x50"]:
        for ours in ["larder-grpc", "larder-http"]:
            for theirs in ["feast-http", "floor", "floor-hgetall"]:
                a, b = best.get((shape, ours)), best.get((shape, theirs))
                if a and b:
                    print(f"{shape:<8} {ours} / {theirs}: {a['rps'] / b['rps']:.1f}x")
    print()
    print("Open loop at a constant rate (latency from intended send time)")
    print(f"{'shape':<8} {'system':<16} {'rate':>6} {'p50 us':>9} {'p99 us':>9} {'p99.9 us':>9} {'max us':>9} {'errors':>7}")
    open_systems = systems + ["larder-grpc-ht", "floor-ht", "larder-grpc-noop", "floor-ping", "floor-relay", "floor-relay-ping"]
    for shape in ["1x50", "100x50"]:
        for mode in sorted({m for sys_runs in runs.get(shape, {}).values() for m in sys_runs if m[:1] == "r" and m[1:].isdigit()}):
            def run_of(system):
                return runs.get(shape, {}).get(system, {}).get(mode)

            floors = [f for f in (run_of("floor"), run_of("floor-hgetall")) if f]
            best_floor = min(floors, key=lambda f: pct(f, 50)) if floors else None
            for system in open_systems:
                r = run_of(system)
                if not r:
                    continue
                # Each server against the floor of its own Redis and work;
                # the relay rows against the same reads without the relay.
                floor = {
                    "larder-grpc-ht": run_of("floor-ht"),
                    "larder-grpc-noop": run_of("floor-ping"),
                    "floor-relay": run_of("floor-hgetall"),
                    "floor-relay-ping": run_of("floor-ping"),
                }.get(system, best_floor)
                extra = ""
                if floor and (not system.startswith("floor") or system.startswith("floor-relay")) and not (behind(r) or behind(floor)):
                    extra = f"   p50 over its floor: {(pct(r, 50) - pct(floor, 50)) / 1000:+.0f} us"
                print(
                    f"{shape:<8} {system:<16} {mode[1:]:>6} {us(pct(r, 50)):>9} {us(pct(r, 99)):>9} {us(pct(r, 99.9)):>9} {us(r['slowest']):>9} {r['errors']:>7}{extra}"
                )
    rss = results / "rss.json"
    if rss.exists():
        m = json.loads(rss.read_text())
        print()
        print(
            f"larder RSS over a {m['seconds']} s run: start {m['rss_kib_start'] / 1024:.1f} MiB, end {m['rss_kib_end'] / 1024:.1f} MiB"
        )


if __name__ == "__main__":
    main()
