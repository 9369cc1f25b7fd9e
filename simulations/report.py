"""Everything a comparison produces on disk: JSON/CSV figures, PNG plots, one HTML report.

The report is a single file (plots inlined as data URIs, inline CSS, no scripts) so it can
be mailed or attached to an issue as is. Apart from PNG rendering, every file is a pure
function of the results: no timestamps, no host names, stable row and column order.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections import Counter
from pathlib import Path

from simulations.metrics import (
    Row,
    job_rows,
    job_state,
    queue_service,
    queue_slowdown,
    summarize,
)
from simulations.plots import render_plots
from simulations.run import RunResult

# What each summary figure means, for the report's table (keys of `summarize`).
FIGURES: dict[str, str] = {
    "jobs": "jobs in the scenario",
    "completed": "jobs that finished",
    "stuck": "jobs that did not finish by the end of the run",
    "deadlock_at_s": "when partial gangs held GPUs with nothing running and nothing pending",
    "jct_mean_s": "job completion time (submit to end), completed jobs, mean",
    "jct_p50_s": "JCT median (nearest rank)",
    "jct_p95_s": "JCT 95th percentile (nearest rank)",
    "jct_p99_s": "JCT 99th percentile (nearest rank)",
    "wait_mean_s": "queueing delay (submit to all pods placed), started jobs, mean",
    "wait_p95_s": "queueing delay 95th percentile",
    "makespan_s": "time of the last completion; only when every job completed",
    "run_s": "virtual time the run lasted: horizon, or until nothing was left to happen",
    "gpu_utilisation": "GPU-seconds of progress kept (runs and checkpoints) / (GPUs x run length)",
    "idle_held_gpu_h": "GPU-hours held by placed pods of jobs not yet running",
    "wasted_gpu_h": "GPU-hours held by attempts that were then given up (gang-timeout)",
    "restarts": "jobs killed by a node failure and resubmitted",
    "preemptions": "times a running job was evicted by the preemption policy",
    "lost_gpu_h": "GPU-hours of work lost by kills and preemptions (since the last checkpoint)",
    "node_failures": "node failures during the run",
    "fairness_jain": (
        "Jain's index over queues of the share of GPU demand served: 1 = equal shares, "
        "1/n = one of n queues served (always 1 with a single queue)"
    ),
    "slowdown_fairness_jain": (
        "Jain's index over queues of 1 / GPU-weighted slowdown (JCT / duration): 1 = every "
        "queue's jobs slowed down alike"
    ),
    "events": "simulator events processed",
}
STATES = ("done", "running", "partial", "waiting", "not-submitted")


def _csv(rows: list[Row]) -> str:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fields)
    writer.writerows([row.get(f) for f in fields] for row in rows)
    return buf.getvalue()


def _cell(key: str, value: object) -> str:
    if value is None:
        return "&ndash;"
    if key in ("gpu_utilisation", "share") and isinstance(value, float):
        return f"{value:.1%}"
    if key == "slowdown" and isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def _table(header: list[str], body: list[list[str]], cls: str = "") -> str:
    """An HTML table; cells must already be escaped."""
    head = "".join(f"<th>{h}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>\n" for row in body)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>"


TITLES = {
    "utilisation.png": "GPU use over time",
    "queue_length.png": "Queue length over time",
    "jct_cdf.png": "Job completion time distribution",
}
CAPTIONS = {
    "utilisation.png": (
        "GPUs running jobs and GPUs held idle by partially placed jobs, per scheduler. Held "
        "idle is reconstructed from job records, which keep only each job's last attempt: "
        "holds given up by gang-timeout (wasted GPU-hours) and runs killed by node failures "
        "(lost GPU-hours) are counted in the table but not drawn."
    ),
    "queue_length.png": "Jobs submitted and not yet started (waiting or partially placed).",
    "jct_cdf.png": (
        "Share of all jobs completed within a given completion time; a curve that stays "
        "below 1 is a scheduler that left jobs unfinished."
    ),
}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1000px; padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; font-family: ui-monospace, monospace; }
table.figures td:nth-child(2) { text-align: left; color: #555; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
.note { background: #fff4e5; border-left: 4px solid #ff7f0e; padding: 0.4rem 0.8rem; }
.muted { color: #666; font-size: 0.85rem; }
"""


def render_html(
    results: list[RunResult],
    rows: list[Row],
    plots: dict[str, bytes],
    description: str = "",
    files: list[str] | None = None,
) -> str:
    """The self-contained report: scenario, comparison table, deadlock notes, plots."""
    scenario = ", ".join(dict.fromkeys(r.scenario for r in results))
    schedulers = [html.escape(r.scheduler) for r in results]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>Phalanx simulation: {html.escape(scenario)}</title>",
        f"<style>{STYLE}</style></head>",
        "<body>",
        f"<h1>Phalanx simulation: {html.escape(scenario)}</h1>",
    ]
    if description.strip():
        parts.append(f"<p>{html.escape(description.strip())}</p>")
    first = results[0]
    parts.append(
        f'<p class="muted">{first.total_gpus} GPUs; schedulers compared: '
        f"{', '.join(schedulers)}.</p>"
    )
    for row in rows:
        if row.get("deadlock_at_s") is not None:
            parts.append(
                f'<p class="note"><b>{html.escape(str(row["scheduler"]))}</b> deadlocked at '
                f"t={row['deadlock_at_s']} s with {row['stuck']} jobs stuck, holding "
                f"{row['idle_held_gpu_h']} GPU-hours idle.</p>"
            )

    parts.append("<h2>Comparison</h2>")
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in ("scenario",)]
    body = [
        [html.escape(k), html.escape(FIGURES.get(k, ""))] + [_cell(k, row.get(k)) for row in rows]
        for k in keys
        if k != "scheduler"
    ]
    parts.append(_table(["figure", "meaning", *schedulers], body, "figures"))

    parts.append("<h2>Where jobs ended up</h2>")
    counts = [Counter(job_state(j, r.end_time) for j in r.jobs) for r in results]
    states = [s for s in STATES if any(c[s] for c in counts)]
    parts.append(
        _table(["state", *schedulers], [[s] + [str(c[s]) for c in counts] for s in states])
    )
    parts.append(
        '<p class="muted">partial: some pods placed and holding resources, job never '
        "started; waiting: nothing placed.</p>"
    )

    shares = [queue_service(r) for r in results]
    slowdowns = [queue_slowdown(r) for r in results]
    queues = sorted({q for s in shares for q in s})
    if len(queues) > 1:
        parts.append("<h2>Per queue</h2>")
        parts.append("<p>Share of the queue's GPU demand served during the run:</p>")
        body = [[html.escape(q)] + [_cell("share", s.get(q)) for s in shares] for q in queues]
        parts.append(_table(["queue", *schedulers], body))
        parts.append(
            "<p>GPU-weighted slowdown, completion time over run time (1 = no waiting):</p>"
        )
        body = [[html.escape(q)] + [_cell("slowdown", s.get(q)) for s in slowdowns] for q in queues]
        parts.append(_table(["queue", *schedulers], body))

    parts.append("<h2>Plots</h2>")
    for name, png in plots.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(TITLES.get(name, name))}">'
            f"<figcaption>{html.escape(CAPTIONS.get(name, name))}</figcaption></figure>"
        )
    if files:
        listed = ", ".join(f"<code>{html.escape(f)}</code>" for f in files)
        parts.append(f'<p class="muted">Written alongside this report: {listed}.</p>')
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_outputs(
    results: list[RunResult],
    out_dir: Path,
    *,
    description: str = "",
    step: float | None = None,
) -> list[Path]:
    """Write summary.json/.csv, jobs.csv, the PNG plots and report.html; return their paths.

    `description` is the scenario's, which a RunResult does not carry; `step` is the time
    bin of the plotted series in seconds (chosen from the run length if omitted).
    """
    if not results:
        raise ValueError("write_outputs needs at least one run")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [summarize(r) for r in results]
    jobs: list[Row] = [
        {"scenario": r.scenario, "scheduler": r.scheduler, **row}
        for r in results
        for row in job_rows(r)
    ]
    plots = render_plots(results, step)
    texts = {
        "summary.json": json.dumps(rows, indent=2) + "\n",
        "summary.csv": _csv(rows),
        "jobs.csv": _csv(jobs),
    }
    written = []
    for name, text in texts.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8", newline="")
        written.append(path)
    for name, png in plots.items():
        path = out_dir / name
        path.write_bytes(png)
        written.append(path)
    report = out_dir / "report.html"
    files = [p.name for p in written]
    report.write_text(
        render_html(results, rows, plots, description, files), encoding="utf-8", newline=""
    )
    written.append(report)
    return written
