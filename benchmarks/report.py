"""The Markdown report and PNG charts, built from a run's JSON (``python -m benchmarks report``)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import textwrap
from pathlib import Path
from typing import Any

from benchmarks.systems.base import NATS_URL, PG_DSN, REDIS_URL, version

SERVER_ORDER = ["memory", "sqlite", "nats", "redis", "postgres", "file"]
#: OmniQ/fastest-peer processed/s target per server (default 1.2; the file issue asks 3x).
PEER_TARGET = {"file": 3.0}
KIND_ORDER = {"omniq": 0, "raw": 1, "peer": 2}
COLORS = {"omniq": "#d62728", "raw": "#7f7f7f", "peer": "#1f77b4"}
MB = 1024 * 1024
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


# --- machine and versions -------------------------------------------------------------------


def machine_meta() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "servers": _server_versions(),
        "libraries": {
            d: version(d)
            for d in [
                "omniq-core",
                "omniq-backend-sqlite",
                "omniq-backend-nats",
                "omniq-backend-file",
                "redis",
                "nats-py",
                "asyncpg",
                "aiosqlite",
                "taskiq",
                "taskiq-redis",
                "taskiq-nats",
                "arq",
                "rq",
                "huey",
                "dramatiq",
                "saq",
                "streaq",
                "celery",
                "kombu",
                "procrastinate",
                "pgqueuer",
            ]
        },
    }


def _server_versions() -> dict[str, str]:
    out: dict[str, str] = {"sqlite": sqlite3.sqlite_version}
    try:
        import redis

        info = redis.Redis.from_url(REDIS_URL, socket_timeout=2).info("server")
        out["redis"] = str(info.get("redis_version"))
    except Exception as e:
        out["redis"] = f"unreachable ({type(e).__name__})"
    try:
        host, _, port = NATS_URL.removeprefix("nats://").partition(":")
        with socket.create_connection((host, int(port or 4222)), timeout=2) as s:
            line = s.makefile("rb").readline().decode()
        info = json.loads(line.split(" ", 1)[1])
        out["nats"] = f"{info.get('version')} (JetStream: {bool(info.get('jetstream'))})"
    except Exception as e:
        out["nats"] = f"unreachable ({type(e).__name__})"
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=2) as c:
            row = c.execute("SHOW server_version").fetchone()
            out["postgres"] = str(row[0]) if row else "?"
    except Exception as e:
        out["postgres"] = f"unreachable ({type(e).__name__})"
    return out


# --- numbers ----------------------------------------------------------------------------------


def median_spread(values: list[float | None]) -> tuple[float | None, float | None, float | None]:
    """(median, min, max) of the runs that produced a value (as ``harness.median_spread``;
    repeated so that reports build without the harness's dependencies, e.g. psutil)."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)


def brief(workload: str, r: dict[str, Any]) -> str:
    if workload == "w1":
        p1, p2 = r.get("p1", {}), r.get("p2", {})
        return (
            f"enqueue {_n(p1.get('enqueue_rate'))}/s, processed {_n(p1.get('rate'))}/s (1 proc), "
            f"{_n(p2.get('rate'))}/s (2 procs), RSS {_mb(p1.get('peak_rss'))}"
        )
    if workload == "w2":
        return f"p50 {r['p50']:.2f} ms, p95 {r['p95']:.2f} ms, p99 {r['p99']:.2f} ms"
    return (
        f"enqueue {_n(r.get('enqueue_rate'))}/s, start {_n(r.get('start_rate'))}/s, "
        f"end {_n(r.get('end_rate'))}/s, finished={r.get('finished')}"
    )


def _n(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x / MB:.0f} MB"


METRICS: dict[str, Any] = {
    "w1_enqueue": lambda r: r.get("p1", {}).get("enqueue_rate"),
    "w1_rate1": lambda r: r.get("p1", {}).get("rate"),
    "w1_rate2": lambda r: r.get("p2", {}).get("rate"),
    "w1_rss": lambda r: r.get("p1", {}).get("peak_rss"),
    "w2_p50": lambda r: r.get("p50"),
    "w2_p95": lambda r: r.get("p95"),
    "w2_p99": lambda r: r.get("p99"),
    "w3_enqueue": lambda r: r.get("enqueue_rate"),
    "w3_rate": lambda r: r.get("rate"),
    "w3_start": lambda r: r.get("start_rate"),
    "w3_end": lambda r: r.get("end_rate"),
    "w3_ratio": lambda r: (
        r["end_rate"] / r["start_rate"] if r.get("end_rate") and r.get("start_rate") else None
    ),
}


def stat(row: dict[str, Any], metric: str) -> tuple[float | None, float | None, float | None]:
    runs = row.get("runs", {}).get(metric[:2], [])
    return median_spread([METRICS[metric](r) for r in runs])


def cell(row: dict[str, Any], metric: str, fmt: Any = _n) -> str:
    med, lo, hi = stat(row, metric)
    if med is None:
        errs = row.get("errors", {}).get(metric[:2])
        return "failed" if errs else "-"
    text = fmt(med)
    if lo is not None and hi is not None and hi > lo and med:
        text += f" ±{(hi - lo) / 2 / med * 100:.0f}%"
    return text


def ordered(systems: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    def key(item: tuple[str, dict[str, Any]]) -> tuple[int, int, str, str]:
        row = item[1]
        return (
            SERVER_ORDER.index(row["server"]), KIND_ORDER[row["kind"]], row["name"],
            row.get("variant", ""),
        )  # fmt: skip

    return sorted(systems.items(), key=key)


def label(row: dict[str, Any]) -> str:
    variant = f", {row['variant']}" if row.get("variant") else ""
    return f"{row['name']} ({row['server']}{variant})"


# --- targets ----------------------------------------------------------------------------------


def headline(systems: dict[str, Any]) -> list[dict[str, Any]]:
    """Per server with peers: OmniQ against the best peer and the raw loop."""
    rows = dict(ordered(systems))
    omniq = {
        (r["server"], r.get("variant", "")): r
        for r in rows.values()
        if r["kind"] == "omniq" and r.get("runs")
    }
    out = []
    for server, variant in _headline_keys(rows.values()):
        peers = [r for r in rows.values() if r["server"] == server and r["kind"] == "peer"]
        raws = [r for r in rows.values() if r["server"] == server and r["kind"] == "raw"]
        if not peers and not raws:
            continue
        # the raw loop at the same durability (variant) as the OmniQ row, when there is one
        raws = [r for r in raws if r.get("variant", "") == variant] or raws
        oq = omniq.get((server, variant)) or omniq.get(("nats", "")) or omniq.get(("sqlite", ""))
        if oq is None:
            continue
        h: dict[str, Any] = {"server": server, "omniq": label(oq)}

        def best(rs: list[dict[str, Any]], metric: str, low: bool = False) -> Any:
            vals = [(stat(r, metric)[0], r) for r in rs]
            vals = [(v, r) for v, r in vals if v is not None]
            if not vals:
                return None, None
            return (min if low else max)(vals, key=lambda x: x[0])

        o_rate = stat(oq, "w1_rate1")[0]
        p_rate, p_row = best(peers, "w1_rate1")
        r_rate, _ = best(raws, "w1_rate1")
        o_enq = stat(oq, "w1_enqueue")[0]
        r_enq, _ = best(raws, "w1_enqueue")
        o_p50 = stat(oq, "w2_p50")[0]
        p_p50, p50_row = best(peers, "w2_p50", low=True)
        o_rss = stat(oq, "w1_rss")[0]
        p_rss, rss_row = best(peers, "w1_rss", low=True)
        o_w3 = stat(oq, "w3_ratio")[0]
        w3_runs = oq.get("runs", {}).get("w3", [])
        w3_finished = bool(w3_runs) and all(r.get("finished") for r in w3_runs)
        h.update(
            w3_finished=w3_finished,
            omniq_rate=o_rate,
            peer=label(p_row) if p_row else None,
            peer_rate=p_rate,
            x_peer=o_rate / p_rate if o_rate and p_rate else None,
            raw_rate=r_rate,
            x_raw=o_rate / r_rate if o_rate and r_rate else None,
            x_enqueue=o_enq / r_enq if o_enq and r_enq else None,
            omniq_p50=o_p50,
            peer_p50=p_p50,
            peer_p50_name=label(p50_row) if p50_row else None,
            w3_ratio=o_w3,
            omniq_rss=o_rss,
            peer_rss=p_rss,
            peer_rss_name=label(rss_row) if rss_row else None,
        )
        h["met"] = {
            "rate_vs_peer": h["x_peer"] is not None and h["x_peer"] >= PEER_TARGET.get(server, 1.2),
            "rate_vs_raw": h["x_raw"] is not None and h["x_raw"] >= 0.5,
            "enqueue_vs_raw": h["x_enqueue"] is not None and h["x_enqueue"] >= 0.8,
            "p50": o_p50 is not None and p_p50 is not None and o_p50 <= p_p50,
            "w3": o_w3 is not None and 0.8 <= o_w3 <= 1.2 and w3_finished,
            "rss": o_rss is not None and p_rss is not None and o_rss <= p_rss + 20 * MB,
        }
        out.append(h)
    return out


def _headline_keys(rows: Any) -> list[tuple[str, str]]:
    """(server, variant) of every headline row: each server once, plus one row per
    variant its OmniQ rows come in (e.g. SQLite at ``synchronous=normal``)."""
    variants = {
        (r["server"], r.get("variant", ""))
        for r in rows
        if r["kind"] == "omniq" and r.get("variant")
    }
    keys = [(server, "") for server in SERVER_ORDER]
    keys += sorted(variants, key=lambda k: (SERVER_ORDER.index(k[0]), k[1]))
    return sorted(keys, key=lambda k: (SERVER_ORDER.index(k[0]), k[1]))


def _ok(flag: bool) -> str:
    return "met" if flag else "**missed**"


def headline_table(systems: dict[str, Any]) -> str:
    lines = [
        "| server | OmniQ row | processed/s (1 proc) | fastest peer | OmniQ/peer (≥1.2; file ≥3) "
        "| raw | OmniQ/raw (≥0.5) | bulk enqueue OmniQ/raw (≥0.8) | W2 p50 OmniQ vs best peer "
        "| W3 end/start (0.8-1.2) | RSS OmniQ vs lightest peer (+20 MB) |",
        "|---|---|---:|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for h in headline(systems):
        m = h["met"]

        def x(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}x"

        lines.append(
            f"| {h['server']} | {h['omniq']} | {_n(h['omniq_rate'])} "
            f"| {h['peer'] or '-'}: {_n(h['peer_rate'])} "
            f"| {x(h['x_peer'])} {_ok(m['rate_vs_peer'])} "
            f"| {_n(h['raw_rate'])} | {x(h['x_raw'])} {_ok(m['rate_vs_raw'])} "
            f"| {x(h['x_enqueue'])} {_ok(m['enqueue_vs_raw'])} "
            f"| {_n(h['omniq_p50'])} vs {_n(h['peer_p50'])} ms ({h['peer_p50_name'] or '-'}) "
            f"{_ok(m['p50'])} | {x(h['w3_ratio'])}{'' if h['w3_finished'] else ' (cut at 240 s)'} "
            f"{_ok(m['w3'])} "
            f"| {_mb(h['omniq_rss'])} vs {_mb(h['peer_rss'])} ({h['peer_rss_name'] or '-'}) "
            f"{_ok(m['rss'])} |"
        )
    return "\n".join(lines)


# --- charts -----------------------------------------------------------------------------------


def charts(data: dict[str, Any], stem: str, outdir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for _, r in ordered(data["systems"]) if r.get("runs")]
    made: dict[str, str] = {}
    specs = {
        "w1": ("W1 throughput (log scale, higher is better)", "tasks/s",
               [("w1_enqueue", "enqueue"), ("w1_rate1", "processed, 1 proc"),
                ("w1_rate2", "processed, 2 procs")], True),
        "w2": ("W2 latency: enqueue + await result (log scale, lower is better)", "ms",
               [("w2_p50", "p50"), ("w2_p95", "p95"), ("w2_p99", "p99")], True),
        "w3": ("W3 100k queued: processed/s at the start and end of the drain", "tasks/s",
               [("w3_start", "first 10%"), ("w3_end", "last 10%")], True),
    }  # fmt: skip
    for w, (title, unit, metrics, log) in specs.items():
        present = [r for r in rows if any(stat(r, m)[0] is not None for m, _ in metrics)]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(10, 0.42 * len(present) * len(metrics) / 1.6 + 1.6))
        height = 0.8 / len(metrics)
        shades = [1.0, 0.65, 0.4]
        for j, (m, name) in enumerate(metrics):
            ys, xs, lo, hi, colors = [], [], [], [], []
            for i, r in enumerate(present):
                med, mn, mx = stat(r, m)
                if med is None:
                    continue
                ys.append(i + (j - (len(metrics) - 1) / 2) * height)
                xs.append(med)
                lo.append(med - (mn if mn is not None else med))
                hi.append((mx if mx is not None else med) - med)
                colors.append(COLORS[r["kind"]])
            ax.barh(ys, xs, height=height, color=colors, alpha=shades[j], label=name,
                    xerr=[lo, hi], ecolor="black", capsize=2, edgecolor="white")  # fmt: skip
        ax.set_yticks(range(len(present)))
        ax.set_yticklabels([label(r) for r in present], fontsize=8)
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(unit)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        from matplotlib.patches import Patch

        handles = [Patch(color=COLORS[k], label=k) for k in ("omniq", "raw", "peer")]
        handles += [
            Patch(facecolor="black", alpha=shades[j] * 0.6, label=name)
            for j, (_, name) in enumerate(metrics)
        ]
        ax.legend(handles=handles, fontsize=7, loc="lower right")
        fig.tight_layout()
        path = outdir / f"{stem}-{w}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made[w] = path.name
    return made


# --- the Markdown -----------------------------------------------------------------------------


def build(json_path: Path, docs: bool = False) -> Path:
    json_path = Path(json_path)
    data = json.loads(json_path.read_text())
    outdir = json_path.parent
    stem = json_path.stem
    pngs = charts(data, stem, outdir)
    md = outdir / f"{stem}.md"
    md.write_text(render(data, pngs, stem))
    if docs:
        build_docs([json_path])
    return md


def render(data: dict[str, Any], pngs: dict[str, str], stem: str) -> str:
    meta, cfg, systems = data["meta"], data["config"], data["systems"]
    sizes = cfg["sizes"]
    L: list[str] = []
    L.append(f"# OmniQ benchmark: `{cfg['backend']}` ({stem[:10]})\n")
    L.append(
        f"Command: `uv run --group bench {cfg['command']}`. Every system ran alone, one after "
        f"another, against the same servers on 127.0.0.1. Medians of {cfg['runs']} runs "
        f"(W3: {cfg['w3_runs']}); ±x% is half the min-max spread over the median.\n"
    )
    if cfg.get("note"):
        L.append(cfg["note"] + "\n")
    if cfg.get("scratch"):
        L.append(f"Scratch disk: {cfg['scratch']} (see `prepare_scratch` in "
                 "`benchmarks/systems/base.py`).\n")  # fmt: skip
    L.append("## Machine\n")
    L.append(
        f"- CPU: {meta['cpu']}, {meta['cores']} cores; memory {meta['memory']}; {meta['os']}; "
        f"Python {meta['python']}"
    )
    L.append("- Servers: " + ", ".join(f"{k} {v}" for k, v in sorted(meta["servers"].items())))
    L.append(
        "- Libraries: "
        + ", ".join(f"{k} {v}" for k, v in meta["libraries"].items() if v != "not installed")
        + "\n"
    )
    L.append("## Headline: OmniQ against the fastest peer and the raw loop, per server\n")
    L.append(
        "Each server's OmniQ row is OmniQ on that server; where a run has none, OmniQ on "
        "NATS, the networked backend a user would weigh against those peers.\n"
    )
    L.append(headline_table(systems) + "\n")
    L.append("## W1 throughput\n")
    L.append(
        f"{sizes['w1']:,} no-op tasks enqueued (bulk where the library has a bulk API), then "
        "drained by 1 worker process, and again by 2. Peak RSS: the 1-process worker and its "
        "children.\n"
    )
    if "w1" in pngs:
        L.append(f"![W1]({pngs['w1']})\n")
    L.append(
        "| system | enqueue/s | bulk | processed/s, 1 proc | processed/s, 2 procs "
        "| worker peak RSS |\n|---|---:|---|---:|---:|---:|"
    )
    for _, r in ordered(systems):
        if r.get("error"):
            L.append(f"| {label(r)} | cannot run: {r['error']} | | | | |")
            continue
        L.append(
            f"| {label(r)} | {cell(r, 'w1_enqueue')} | {r['bulk_note']} | {cell(r, 'w1_rate1')} "
            f"| {cell(r, 'w1_rate2')} | {cell(r, 'w1_rss', _mb)} |"
        )
    L.append("")
    L.append("## W2 latency\n")
    L.append(
        f"One warm worker; {sizes['w2']} sequential round trips (enqueue one task, await its "
        "result through the library's own result API), after 20 untimed ones.\n"
    )
    if "w2" in pngs:
        L.append(f"![W2]({pngs['w2']})\n")
    L.append("| system | p50 ms | p95 ms | p99 ms |\n|---|---:|---:|---:|")
    for _, r in ordered(systems):
        if r.get("error"):
            continue
        L.append(
            f"| {label(r)} | {cell(r, 'w2_p50')} | {cell(r, 'w2_p95')} | {cell(r, 'w2_p99')} |"
        )
    L.append("")
    L.append("## W3 scale\n")
    L.append(
        f"{sizes['w3']:,} tasks queued before one worker process starts. Claim cost must not "
        "grow with queue depth: processed/s over the first and the last 10% of the drain. "
        "A drain still running after 240 s is cut there (finished = no) and its rates cover "
        "what was processed.\n"
    )
    if "w3" in pngs:
        L.append(f"![W3]({pngs['w3']})\n")
    L.append(
        "| system | enqueue/s | processed/s | first 10% | last 10% | end/start | finished |\n"
        "|---|---:|---:|---:|---:|---:|---|"
    )
    for _, r in ordered(systems):
        if r.get("error"):
            continue
        runs = r["runs"].get("w3", [])
        fin = "-" if not runs else ("yes" if all(x.get("finished") for x in runs) else "no")
        L.append(
            f"| {label(r)} | {cell(r, 'w3_enqueue')} | {cell(r, 'w3_rate')} "
            f"| {cell(r, 'w3_start')} | {cell(r, 'w3_end')} "
            f"| {cell(r, 'w3_ratio', lambda v: f'{v:.2f}')} | {fin} |"
        )
    L.append("")
    errors = [
        (label(r), w, e)
        for _, r in ordered(systems)
        for w, es in r.get("errors", {}).items()
        for e in sorted(set(es))
    ]
    if errors:
        L.append("## Failed runs\n")
        L.extend(f"- {name} {w}: {e}" for name, w, e in errors)
        L.append("")
    L.append("## How each system was driven\n")
    L.append("| system | durability | worker | progress counter |\n|---|---|---|---|")
    for _, r in ordered(systems):
        L.append(
            f"| {label(r)} | {r.get('durability') or '-'} | {r['worker_note']} "
            f"| {r['progress_note']} |"
        )
    L.append("")
    L.append(METHOD)
    profile = Path(__file__).resolve().parent / "results" / "profile.md"
    if profile.exists():
        L.append(profile.read_text())
    return "\n".join(L) + "\n"


METHOD = """## Method

- **Same work everywhere.** The task is a no-op; every system stores a result for it (Celery
  and Taskiq with their Redis/NATS result backends, Dramatiq with the Results middleware,
  huey with `store_none=True`; procrastinate and PgQueuer store none, so their round trip
  ends when the job is reported done). Up to 10 tasks in flight per worker process wherever
  the library has that knob (OmniQ `concurrency=10`, arq `max_jobs`, SAQ/streaQ
  `concurrency`, Taskiq `--max-async-tasks`, Dramatiq/huey/Celery 10 threads,
  procrastinate `--concurrency`); RQ's SimpleWorker runs one job at a time.
- **Processed/s** is measured the same way for every system: the benchmark process polls
  a server-side counter of unfinished tasks (the table above) every 10 ms (W3: 50 ms) while
  the worker processes drain; the clock starts at the first poll that sees a task gone
  (interpreter start-up and imports excluded) and stops when none is left.
- **Polling knobs.** Where a library polls (arq worker and `Job.result`, Taskiq
  `wait_result`, SAQ `apply`, huey's SQLite consumer and result wait, procrastinate status,
  PgQueuer's completion debounce) the interval is set to 5 ms (`BENCH_POLL`), so that W2
  measures the library rather than its default sleep.
- **Workers** are real subprocesses, each library's own worker command where it works, in
  their own process group, stopped with SIGTERM then SIGKILL by PID.
- **Raw loops** are the same claim → run → store result → ack cycle written directly with
  the client (`benchmarks/systems/raw_*.py`): the ceiling a Python client reaches.
- **OmniQ on memory** is in-process: producer, worker and counter share one process, so it
  has no 2-process row, and its RSS is that whole process.
"""


# --- the documentation page -------------------------------------------------------------------

SERVER_NAMES = {
    "memory": "memory",
    "sqlite": "SQLite",
    "nats": "NATS",
    "redis": "Redis",
    "postgres": "PostgreSQL",
    "file": "files",
}
#: An en dash for ranges ("1-6 ms") and a multiplication sign for ratios ("9x") on the page.
DASH, TIMES = "\u2013", "\u00d7"
#: The short table's server column.
SERVER_ROWS = {"sqlite": "SQLite (embedded)", "nats": "NATS JetStream"}


def _name(label_or_name: str | None) -> str:
    """A library's plain name: ``huey (SqliteHuey) (sqlite)`` -> ``huey``."""
    return (label_or_name or "-").split(" (", 1)[0]


def _k(x: float) -> str:
    """A rate in round thousands (``380,000``) once it is that large."""
    return f"{round(x, -3):,.0f}" if x >= 10_000 else f"{round(x, -2):,.0f}"


def _span(values: list[float], fmt: Any, unit: str = "") -> str:
    lo, hi = fmt(min(values)), fmt(max(values))
    return f"{lo}{unit}" if lo == hi else f"{lo}{DASH}{hi}{unit}"


def _ratio(x: float) -> str:
    """A ratio for the page: no decimals from 5 up ("9x"), one below ("3.5x")."""
    return f"{x:.0f}{TIMES}" if x >= 5 else f"{x:.1f}{TIMES}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class DocsRow:
    """One server of the docs page: OmniQ on it, from the run that measured it."""

    def __init__(self, server: str, data: dict[str, Any], stem: str, main: bool) -> None:
        self.server, self.data, self.stem, self.main = server, data, stem, main
        self.h = next(h for h in headline(data["systems"]) if h["server"] == server)
        rows = [r for r in data["systems"].values() if r["server"] == server]
        self.omniq = next(r for r in rows if r["kind"] == "omniq")
        self.peers = [r for r in rows if r["kind"] == "peer" and r.get("runs")]

    @property
    def title(self) -> str:
        return SERVER_NAMES.get(self.server, self.server)


def docs_rows(runs: list[tuple[dict[str, Any], str]]) -> list[DocsRow]:
    """Per server with peers or a raw loop, OmniQ's row from the last run that measured
    OmniQ on that very server (a run without one compares OmniQ on NATS, not wanted here)."""
    out: dict[str, DocsRow] = {}
    for i, (data, stem) in enumerate(runs):
        servers = {r["server"] for r in data["systems"].values() if r["kind"] == "omniq"}
        for h in headline(data["systems"]):
            if h["server"] in servers and h["server"] != "memory":
                out[h["server"]] = DocsRow(h["server"], data, stem, main=i == 0)
    return [out[s] for s in SERVER_ORDER if s in out]


def _machine(meta: dict[str, Any]) -> str:
    servers = meta.get("servers", {})
    names = {"nats": "NATS", "postgres": "PostgreSQL", "redis": "Redis", "sqlite": "SQLite"}
    versions = [
        f"{names[k]} {str(servers[k]).split(' (', 1)[0]}"
        for k in ("nats", "postgres", "redis", "sqlite")
        if k in servers and "unreachable" not in str(servers[k])
    ]
    system = str(meta.get("os", "")).split("-", 1)[0] or "Linux"
    text = (
        f"**The machine**: {meta['cores']} CPU cores ({meta['cpu']}) and {meta['memory']} of "
        f"memory, {system}, Python {meta['python']}; {', '.join(versions)}, all local."
    )
    if (meta.get("cores") or 0) <= 4:
        text += (
            " A small machine: absolute numbers on your servers will differ; the comparisons"
            " between libraries measured in the same run are what carries over."
        )
    return text


def _short_table(rows: list[DocsRow]) -> list[str]:
    L = [
        "| server | OmniQ | fastest other library | raw loop | OmniQ, one result "
        "| fastest other library, one result |",
        "| --- | ---: | --- | ---: | ---: | --- |",
    ]
    for r in rows:
        h = r.h
        mark = "" if r.main else " ¹"
        L.append(
            f"| {SERVER_ROWS.get(r.server, r.title)}{mark} | {_n(h['omniq_rate'])}/s "
            f"| {_name(h['peer'])}: {_n(h['peer_rate'])}/s | {_n(h['raw_rate'])}/s "
            f"| {h['omniq_p50']:.1f} ms | {_name(h['peer_p50_name'])}: {h['peer_p50']:.1f} ms |"
        )
    return L


def _meaning(rows: list[DocsRow], main: dict[str, Any]) -> list[str]:
    """The "what this means for you" bullets, the numbers filled in from ``rows``."""
    out: list[str] = []
    with_peer = sorted((r for r in rows if r.h["x_peer"]), key=lambda r: r.h["x_peer"])
    if with_peer:
        least = with_peer[0].h["x_peer"]
        how = (
            "several times more tasks than"
            if least >= 2
            else "more tasks than"
            if least >= 1
            else "a different number of tasks than"
        )
        # rows with the same rounded ratio against the same library read as one
        groups: dict[str, list[str]] = {}
        for r in with_peer:
            groups.setdefault(f"{_ratio(r.h['x_peer'])} {_name(r.h['peer'])}", []).append(r.title)
        ratios = ", ".join(f"{key} on {_and(titles)}" for key, titles in groups.items())
        out.append(
            f"- **Short tasks**: one OmniQ worker process gets through {how} the other "
            f"libraries ({ratios}). OmniQ claims and records tasks in batches, so its overhead "
            "per task is small; with tasks that take 10 ms or more, your own code is the limit "
            "and any of these libraries will keep up."
        )
    with_raw = [r for r in rows if r.h["x_raw"]]
    near = [r for r in with_raw if r.h["x_raw"] >= 0.6]
    far = [r for r in with_raw if r.h["x_raw"] < 0.6]
    parts = []
    if near:
        pct = _span([r.h["x_raw"] * 100 for r in near], lambda v: f"{v:.0f}", " %")
        parts.append(
            f"on {_and([r.title for r in near])} OmniQ reaches {pct} of the raw loop, which "
            "does far less (no retries, no results, no leases)."
        )
    for r in far:
        text = f"On {r.title} it reaches {r.h['x_raw'] * 100:.0f} % of the raw loop"
        if r.server == "postgres":
            text += (
                ", which claims 100 rows and records their results in one statement each "
                "and does nothing else (no leases, fencing, retries or notifications)"
            )
        parts.append(text + ".")
    if parts:
        first = parts[0][0].upper() + parts[0][1:] if not near else parts[0]
        out.append("- **Close to the ceiling**: " + " ".join([first, *parts[1:]]))
    timed = [r for r in rows if r.h["omniq_p50"] is not None]
    if timed:
        span = _span([r.h["omniq_p50"] for r in timed], lambda v: f"{v:.0f}", " ms")
        faster = [
            r for r in timed if r.h["peer_p50"] is not None and r.h["omniq_p50"] <= r.h["peer_p50"]
        ]
        slower = [
            r for r in timed if r.h["peer_p50"] is not None and r.h["omniq_p50"] > r.h["peer_p50"]
        ]
        text = f"- **Waiting for one result** takes {span}"
        if faster:
            text += f": less than every peer on {_and([r.title for r in faster])}"
        for r in slower:
            text += (
                f"; on {r.title}, {_name(r.h['peer_p50_name'])} answers "
                f"{'a little ' if r.h['peer_p50'] * 2 > r.h['omniq_p50'] else ''}sooner "
                f"({r.h['peer_p50']:.1f} against {r.h['omniq_p50']:.1f} ms)"
            )
        out.append(text + ".")
    enq: list[tuple[float, DocsRow]] = [
        (v, r) for r in rows for v in [stat(r.omniq, "w1_enqueue")[0]] if v
    ]
    enq.sort(key=lambda x: -x[0])
    if enq:
        (top, top_row), *rest = enq
        text = f"- **Bulk enqueue** (`map()`): {_k(top)} tasks/s into {top_row.title}"
        text += "".join(f", {_k(v)}/s into {r.title}" for v, r in rest[:-1])
        if rest:
            text += f" and {_k(rest[-1][0])}/s into {rest[-1][1].title}"
        # the full run's peers: every library there, on every server
        single = [
            v for p in main["systems"].values()
            if p["kind"] == "peer" and not p.get("bulk")
            for v in [stat(p, "w1_enqueue")[0]] if v
        ]  # fmt: skip
        text += "."
        if single:
            text += (
                " The libraries without a bulk call queue "
                f"{_span(single, lambda v: f'{round(v, -2):,.0f}').replace(DASH, ' to ')} tasks/s."
            )
        out.append(text)
    deep = [r for r in rows if r.h["w3_ratio"] is not None and r.h["w3_finished"]]
    untested = [r for r in rows if r not in deep]
    if deep:
        steady = all(0.8 <= r.h["w3_ratio"] <= 1.2 for r in deep)
        lead = "Deep queues** do not slow OmniQ down" if steady else "Deep queues**"
        ratios = _and([f"{r.h['w3_ratio']:.2f}{TIMES} on {r.title}" for r in deep])
        text = (
            f"- **{lead}: over {deep[0].data['config']['sizes']['w3']:,} queued tasks the last "
            f"tenth ran at {ratios.replace(' on ', ' the speed of the first on ', 1)}"
        )
        if untested:
            names = _and([r.title for r in untested])
            verb = "has" if len(untested) == 1 else "have"
            noun = "backend" if len(untested) == 1 else "backends"
            text += f" (the {names} {noun} {verb} not had this test yet)"
        out.append(text + ".")
    rss = [v for r in rows for v in [stat(r.omniq, "w1_rss")[0]] if v]
    peer_rss = [(v, _name(p["name"])) for r in rows for p in r.peers
                for v in [stat(p, "w1_rss")[0]] if v]  # fmt: skip
    if rss and peer_rss:
        lightest = min(v for v, _ in peer_rss)
        heaviest, heavy_name = max(peer_rss)
        peak = _span(rss, lambda v: f"{v / MB:.0f}", " MB")
        text = f"- **Memory**: an OmniQ worker process peaks at {peak}"
        if max(rss) <= lightest + 20 * MB:
            text += ", about as much as the lightest peers"
        if max(rss) <= heaviest * 0.6:
            share = max(rss) / heaviest
            part = "half" if 0.4 <= share <= 0.55 else f"{share:.0%}"
            text += f" and {part} of {heavy_name}'s ({heaviest / MB:.0f} MB)"
        out.append(text + ".")
    return out


def _wrap(text: str) -> str:
    """A paragraph (or a ``- `` bullet) wrapped at 88 columns, as the page is written."""
    indent = "  " if text.startswith("- ") else ""
    return textwrap.fill(
        text, 88, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def _footnote(extra: list[DocsRow], main: dict[str, Any]) -> str:
    """Why the rows marked ¹ come from other runs, and how those runs differ."""
    one = len(extra) == 1
    what = []
    if all("w3" not in r.data["config"].get("workloads", []) for r in extra):
        what.append("throughput and latency only")
    metas = [r.data["meta"] for r in extra]
    if all(m.get("cores") == main["meta"].get("cores") for m in metas):
        if any(m.get("cpu") != main["meta"].get("cpu") for m in metas):
            what.append("on a machine of the same size with another CPU")
    else:
        what.append("on another machine")
    runs = ", ".join(f"`{r.stem}`" for r in extra)
    detail = f"{runs}; {', '.join(what)}" if what else runs
    return (
        f"¹ OmniQ's {_and([r.title for r in extra])} {'backend' if one else 'backends'} came "
        f"after the full run: {'it was' if one else 'they were'} measured in "
        f"{'its' if one else 'their'} own {'run' if one else 'runs'} ({detail}), "
        f"{'' if one else 'each '}beside the raw loop and the fastest peers measured again in "
        "that run, so each row compares numbers from one run."
    )


def render_docs(runs: list[tuple[dict[str, Any], str]], pngs: dict[str, str]) -> str:
    """``docs/benchmarks.md`` from the full run (first) and any later runs of single
    backends: the page's prose is the template, the numbers come from the runs."""
    main, stem = runs[0]
    sizes = main["config"]["sizes"]
    rows = docs_rows(runs)
    extra = [r for r in rows if not r.main]
    L = [
        "# Benchmarks\n",
        "How fast is OmniQ compared with the task queues you might use instead, and compared\n"
        "with the best a Python program can do talking to the same server directly? This page\n"
        "says what was measured, on what, and what each number means for you. The full reports\n"
        "(every number with its spread, library versions, how each library was driven, profiles)\n"
        "are in [`benchmarks/results/`](https://github.com/omniq-dev/omniq/tree/main/benchmarks/results).\n",
        "## What was measured\n",
        "Every library ran alone, one after another, against the same servers on the same\n"
        "machine, with tasks that do nothing — so the numbers measure the queue's own overhead,\n"
        "the part a library adds to every task.\n",
        "| test | what it does | what it tells you |\n| --- | --- | --- |",
        f"| **Throughput** | enqueue {sizes['w1']:,} empty tasks (with the library's bulk call "
        "if it has one), then time one worker process draining them, then two | how many "
        "tasks per second one worker can get through when your tasks are short; how fast a "
        "batch can be queued |",
        f"| **Latency** | one warm worker; enqueue one task and wait for its result, "
        f"{sizes['w2']:,} times in a row | how long a caller waits for a quick task, beyond "
        "the task's own run time (median, 95th and 99th percentile) |",
        f"| **Deep queue** | {sizes['w3']:,} tasks queued before the worker starts; compare "
        "its speed over the first and the last tenth | whether claiming gets slower as the "
        "queue grows (a ratio near 1 means it does not) |\n",
        "Beside the libraries, a **raw loop** per server — a small program that uses the server's\n"
        "Python client directly (a list in Redis, a table with `SKIP LOCKED` in PostgreSQL, a\n"
        "JetStream stream), with no retries, results or leases — shows the ceiling a Python "
        "client\nreaches on that server.\n",
        _wrap(_machine(main["meta"])) + "\n",
        "## The results in short\n",
        _wrap(
            f"One worker process, {sizes['w1']:,} empty tasks (tasks per second, higher is "
            "better), and the median wait for one quick task's result (lower is better):"
        )
        + "\n",
        *_short_table(rows),
        "",
    ]
    if extra:
        L.append(_wrap(_footnote(extra, main)) + "\n")
    L += ["What this means for you:\n", *map(_wrap, _meaning(rows, main)), ""]
    charted = [
        SERVER_NAMES.get(r["server"], r["server"])
        for r in main["systems"].values()
        if r["kind"] == "omniq" and r.get("runs")
    ]
    L += [
        "## Charts\n",
        f"From the full run of {stem[:10]} (OmniQ on {_and(charted)}, and every peer).\n",
    ]
    captions = {
        "w1": (
            "Tasks per second, one worker process and two:",
            "Throughput: tasks per second, one and two worker processes",
        ),
        "w2": (
            "Wait for one task's result (median, 95th, 99th percentile):",
            "Latency: milliseconds from enqueue to result",
        ),
        "w3": (
            f"Speed over the first and last tenth of a {sizes['w3']:,}-task queue:",
            "Deep queue: speed at the start and at the end of the drain",
        ),
    }
    for w, (text, alt) in captions.items():
        if w in pngs:
            L.append(f"{text}\n\n![{alt}](img/benchmarks/{pngs[w]})\n")
    L.append(REPRODUCE)
    return "\n".join(L)


REPRODUCE = """## Reproduce

```bash
uv run --group bench python -m benchmarks run --backend all              # about an hour
uv run --group bench python -m benchmarks run --backend redis --quick    # one server, minutes
```

`--backend` is `memory`, `sqlite`, `nats`, `redis`, `postgres` or `all`. Run it on an
otherwise idle machine. See
[`benchmarks/README.md`](https://github.com/omniq-dev/omniq/tree/main/benchmarks/README.md)
for every option.
"""


def build_docs(json_paths: list[Path], out: Path = DOCS) -> Path:
    """Write the docs page ``out`` from the full run (first) and later single-backend runs,
    with the full run's charts (made by :func:`build`) copied to ``out``'s ``img/benchmarks``."""
    runs = []
    for p in json_paths:
        p = Path(p)
        runs.append((json.loads(p.read_text()), p.stem))
    first = Path(json_paths[0])
    pngs = {
        w: f"{first.stem}-{w}.png"
        for w in ("w1", "w2", "w3")
        if (first.parent / f"{first.stem}-{w}.png").exists()
    }
    images = out.parent / "img" / "benchmarks"
    images.mkdir(parents=True, exist_ok=True)
    for old in images.glob("*.png"):
        if old.name not in pngs.values():
            old.unlink()
    for name in pngs.values():
        shutil.copyfile(first.parent / name, images / name)
    out.write_text(render_docs(runs, pngs))
    return out
