"""The Markdown report and PNG charts, built from a run's JSON (``python -m benchmarks report``)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import sqlite3
from pathlib import Path
from typing import Any

from benchmarks.harness import median_spread
from benchmarks.systems.base import NATS_URL, PG_DSN, REDIS_URL, version

SERVER_ORDER = ["memory", "sqlite", "nats", "redis", "postgres"]
KIND_ORDER = {"omniq": 0, "raw": 1, "peer": 2}
COLORS = {"omniq": "#d62728", "raw": "#7f7f7f", "peer": "#1f77b4"}
MB = 1024 * 1024
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
#: The charts are copied here so the built documentation site shows them too.
DOCS_IMAGES = DOCS.parent / "img" / "benchmarks"


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
    def key(item: tuple[str, dict[str, Any]]) -> tuple[int, int, str]:
        row = item[1]
        return (SERVER_ORDER.index(row["server"]), KIND_ORDER[row["kind"]], row["name"])

    return sorted(systems.items(), key=key)


def label(row: dict[str, Any]) -> str:
    return f"{row['name']} ({row['server']})"


# --- targets ----------------------------------------------------------------------------------


def headline(systems: dict[str, Any]) -> list[dict[str, Any]]:
    """Per server with peers: OmniQ against the best peer and the raw loop."""
    rows = dict(ordered(systems))
    omniq = {r["server"]: r for r in rows.values() if r["kind"] == "omniq" and r.get("runs")}
    out = []
    for server in SERVER_ORDER:
        peers = [r for r in rows.values() if r["server"] == server and r["kind"] == "peer"]
        raws = [r for r in rows.values() if r["server"] == server and r["kind"] == "raw"]
        if not peers and not raws:
            continue
        oq = omniq.get(server) or omniq.get("nats") or omniq.get("sqlite")
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
            "rate_vs_peer": h["x_peer"] is not None and h["x_peer"] >= 1.2,
            "rate_vs_raw": h["x_raw"] is not None and h["x_raw"] >= 0.5,
            "enqueue_vs_raw": h["x_enqueue"] is not None and h["x_enqueue"] >= 0.8,
            "p50": o_p50 is not None and p_p50 is not None and o_p50 <= p_p50,
            "w3": o_w3 is not None and 0.8 <= o_w3 <= 1.2 and w3_finished,
            "rss": o_rss is not None and p_rss is not None and o_rss <= p_rss + 20 * MB,
        }
        out.append(h)
    return out


def _ok(flag: bool) -> str:
    return "met" if flag else "**missed**"


def headline_table(systems: dict[str, Any]) -> str:
    lines = [
        "| server | OmniQ row | processed/s (1 proc) | fastest peer | OmniQ/peer (≥1.2) "
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
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        for old in DOCS_IMAGES.glob("*.png"):
            old.unlink()
        for name in pngs.values():
            shutil.copyfile(outdir / name, DOCS_IMAGES / name)
        DOCS.write_text(render_docs(data, pngs, stem))
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
    L.append("| system | worker | progress counter |\n|---|---|---|")
    for _, r in ordered(systems):
        L.append(f"| {label(r)} | {r['worker_note']} | {r['progress_note']} |")
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


def render_docs(data: dict[str, Any], pngs: dict[str, str], stem: str) -> str:
    L = [
        "# Benchmarks\n",
        "`benchmarks/` compares OmniQ with the task queues users would pick instead, and with "
        "raw client loops (the ceiling a Python client reaches), on the same servers in one "
        "run. Reproduce with one command:\n",
        "```bash\nuv run --group bench python -m benchmarks run --backend all   "
        "# or memory, sqlite, nats, redis, postgres; --quick for a smoke run\n```\n",
        f"The full report is `benchmarks/results/{stem}.md` (machine, versions, every "
        "number with its spread, how each library was driven, and what the profile shows).\n",
        "## OmniQ against the fastest peer and the raw loop\n",
        headline_table(data["systems"]) + "\n",
    ]
    for w, title in (("w1", "W1 throughput"), ("w2", "W2 latency"), ("w3", "W3 scale")):
        if w in pngs:
            L.append(f"## {title}\n\n![{title}](img/benchmarks/{pngs[w]})\n")
    return "\n".join(L)
