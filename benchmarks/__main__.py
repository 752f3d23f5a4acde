"""``python -m benchmarks``: run the benchmark, rebuild the report, profile OmniQ.

    uv run --group bench python -m benchmarks run --backend redis      # or all, sqlite, ...
    uv run --group bench python -m benchmarks run --backend all --quick  # smoke run
    uv run --group bench python -m benchmarks report results/DATE-BACKEND.json
    uv run --group bench python -m benchmarks profile --backend sqlite

Systems run one after another, never two at once. Each run of each workload is saved to
``benchmarks/results/<date>-<backend>.json`` as it finishes; the Markdown report and the
PNG charts are rebuilt from that file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import harness, report
from benchmarks.systems import BACKENDS, load, systems_for
from benchmarks.systems.base import System, Unavailable, empty_trash, prepare_scratch

RESULTS = Path(__file__).resolve().parent / "results"

#: W1 drains 50,000 tasks: long enough that a worker process's start-up (imports, about
#: 0.5-1 s of CPU) does not weigh on the rate, with two processes least of all
FULL = {"w1": 50_000, "w2": 500, "w3": 100_000}
QUICK = {"w1": 2_000, "w2": 100, "w3": 10_000}


def _prefix(cls: type[System]) -> str:
    return f"bench-{cls.__name__.lower()}"


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _run_one(system: System, workload: str, sizes: dict[str, int], quick: bool) -> dict[str, Any]:
    n = sizes[workload]
    drain_timeout = 120.0 if quick else (300.0 if workload == "w1" else 240.0)
    if system.inproc:
        return harness.run_inproc(system, workload, n, timeout=drain_timeout + 120)
    if workload == "w1":
        return harness.w1(system, n, poll=0.01, timeout=drain_timeout)
    if workload == "w2":
        return harness.w2(system, n)
    return harness.w3(system, n, poll=0.05, timeout=drain_timeout)


def _one(
    system: System,
    row: dict[str, Any],
    workload: str,
    i: int,
    sizes: dict[str, int],
    args: argparse.Namespace,
    out: Path,
    data: dict[str, Any],
) -> None:
    """Run one workload once and save the JSON (a failure is recorded, not raised)."""
    _say(f"{system.label}: {workload} run {i + 1}")
    try:
        result = _run_one(system, workload, sizes, args.quick)
        row["runs"][workload].append(result)
        _say(f"  {report.brief(workload, result)}")
    except Exception as e:
        msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        row["errors"].setdefault(workload, []).append(msg)
        _say(f"  failed: {msg}")
        if args.verbose:
            traceback.print_exc()
        try:
            system.teardown()
        except Exception:
            pass
    out.write_text(json.dumps(data, indent=1))


def _close(system: System) -> None:
    try:
        system.close_loop()
    except Exception:
        pass


def run(args: argparse.Namespace) -> int:
    sizes = dict(QUICK if args.quick else FULL)
    for item in (args.sizes or "").split(","):
        if item.strip():
            workload, _, n = item.partition("=")
            sizes[workload.strip()] = int(n)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    w3_runs = args.w3_runs if args.w3_runs is not None else (1 if args.quick else runs)
    refs = systems_for(args.backend)
    if args.systems:
        wanted = {s.strip().lower() for s in args.systems.split(",")}
        refs = [r for r in refs if r.split(":")[1].lower() in wanted]
    date = dt.date.today().isoformat()
    suffix = "-quick" if args.quick else ""
    out = Path(args.out) if args.out else RESULTS / f"{date}-{args.backend}{suffix}.json"
    data: dict[str, Any] = {
        "meta": report.machine_meta(),
        "config": {
            "backend": args.backend,
            "sizes": sizes,
            "runs": runs,
            "w3_runs": w3_runs,
            "workloads": workloads,
            "quick": args.quick,
            "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        },
        "systems": {},
    }
    if out.exists() and args.resume:
        data["systems"] = json.loads(out.read_text()).get("systems", {})
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.interleave:
        data["config"]["note"] = (
            "Runs interleaved: each round runs every system once per workload, so that the "
            "rows of one round saw the same machine load."
        )
    if args.backend in ("file", "all"):
        data["config"]["scratch"] = prepare_scratch()
    ready: list[tuple[System, dict[str, Any]]] = []
    for ref in refs:
        cls = load(ref)
        system: System = cls(_prefix(cls))
        key = ref
        if args.resume and key in data["systems"] and not data["systems"][key].get("error"):
            _say(f"{system.label}: kept from {out.name}")
            continue
        row: dict[str, Any] = {
            "name": system.name,
            "server": system.server,
            "kind": system.kind,
            "variant": system.variant,
            "durability": system.durability,
            "versions": {},
            "bulk": system.bulk,
            "bulk_note": system.bulk_note,
            "worker_note": system.worker_note,
            "progress_note": system.progress_note,
            "runs": {w: [] for w in workloads},
            "errors": {},
        }
        data["systems"][key] = row
        try:
            row["versions"] = system.versions()
            system.check()
        except Exception as e:  # Unavailable, a missing package, no server
            reason = str(e) if isinstance(e, Unavailable) else f"{type(e).__name__}: {e}"
            row["error"] = reason.splitlines()[0][:300]
            _say(f"{system.label}: cannot run: {row['error']}")
            out.write_text(json.dumps(data, indent=1))
            continue
        if not args.interleave:
            for workload in workloads:
                for i in range(w3_runs if workload == "w3" else runs):
                    _one(system, row, workload, i, sizes, args, out, data)
            _close(system)
        else:
            ready.append((system, row))
    for i in range(max(runs, w3_runs) if args.interleave else 0):
        for workload in workloads:
            if i >= (w3_runs if workload == "w3" else runs):
                continue
            for system, row in ready:
                _one(system, row, workload, i, sizes, args, out, data)
    for system, _ in ready:
        _close(system)
    empty_trash()
    out.write_text(json.dumps(data, indent=1))
    md = report.build(out, docs=args.backend == "all" and not args.quick)
    _say(f"report: {md}")
    return 0


def report_cmd(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.json] or sorted(RESULTS.glob("*.json"))[-1:]
    for p in paths:
        print(report.build(p))
    if args.docs:  # the first run is the full one; later ones add the servers it lacks
        print(report.build_docs(paths))
    return 0


def profile_cmd(args: argparse.Namespace) -> int:
    from benchmarks import profile

    for backend in args.backend.split(","):
        print(profile.run(backend, args.n))
    return 0


def budget_cmd(args: argparse.Namespace) -> int:
    from benchmarks import budget

    for backend in args.backend.split(","):
        print(budget.run(backend, args.n, args.rate))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the workloads and write the report")
    r.add_argument("--backend", choices=[*BACKENDS, "all"], required=True)
    r.add_argument("--workloads", default="w1,w2,w3")
    r.add_argument("--runs", type=int, default=None, help="runs per workload (default 3)")
    r.add_argument("--w3-runs", type=int, default=None, help="runs of w3 (default: --runs)")
    r.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke run")
    r.add_argument("--sizes", help="tasks per workload, e.g. w1=10000,w3=20000")
    r.add_argument("--systems", help="only these (class names, comma-separated)")
    r.add_argument("--out", help="JSON file to write (default results/DATE-BACKEND.json)")
    r.add_argument("--resume", action="store_true", help="keep rows already in --out")
    r.add_argument(
        "--interleave",
        action="store_true",
        help="run in rounds (every system once per round) instead of system by system",
    )
    r.add_argument("-v", "--verbose", action="store_true")
    r.set_defaults(fn=run)
    rep = sub.add_parser("report", help="rebuild Markdown and PNGs from saved JSON")
    rep.add_argument("json", nargs="*")
    rep.add_argument(
        "--docs",
        action="store_true",
        help="also rewrite docs/benchmarks.md from these runs (the full run first)",
    )
    rep.set_defaults(fn=report_cmd)
    pr = sub.add_parser("profile", help="profile an OmniQ worker with pyinstrument")
    pr.add_argument(
        "--backend", default="sqlite,nats", help="sqlite, nats, file, memory (comma-separated)"
    )
    pr.add_argument("--n", type=int, default=10_000)
    pr.set_defaults(fn=profile_cmd)
    bu = sub.add_parser("budget", help="CPU per task by stage (py-spy, sampled from outside)")
    bu.add_argument("--backend", default="sqlite", help="sqlite, sqlite-normal, nats, file")
    bu.add_argument("--n", type=int, default=100_000)
    bu.add_argument("--rate", type=int, default=200, help="samples per second")
    bu.set_defaults(fn=budget_cmd)
    args = p.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
