"""Comparison plots of runs of one scenario, rendered to PNG bytes with matplotlib's Agg.

Figures are built on `matplotlib.figure.Figure` directly, not pyplot, so nothing global
(backend, open-figure registry) changes; default style is pinned so a user's matplotlibrc
cannot change the output; the PNG carries no Software/date metadata, so identical runs
give byte-identical files.
"""

from __future__ import annotations

import io
import math

import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simulations.metrics import Utilisation, queue_length_series, summarize, utilisation_series
from simulations.run import RunResult

# Stable colours per scheduler across every plot; others take the tab10 cycle in order.
COLOURS = {"phalanx": "#2a9d4b", "per-pod": "#d62728", "gang-timeout": "#ff7f0e"}
_FALLBACK = ["#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
DPI = 100
# Legends go right of the axes so they never hide a curve.
OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}


def dashes(index: int) -> str:
    """Line style per run, so runs with identical curves still show up as separate lines."""
    return ("-", "--", "-.", ":")[index % 4]


def colour(scheduler: str, index: int) -> str:
    return COLOURS.get(scheduler, _FALLBACK[index % len(_FALLBACK)])


def auto_step(span: float, bins: int = 600) -> float:
    """A round bin width (1, 2 or 5 x 10^k seconds) giving at most about `bins` bins."""
    if span <= 0:
        return 1.0
    raw = span / bins
    base = 10.0 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


def time_unit(span: float) -> tuple[str, float]:
    """Axis unit for a run of `span` virtual seconds: hours, minutes or seconds."""
    if span >= 3 * 3600:
        return "h", 3600.0
    if span >= 3 * 60:
        return "min", 60.0
    return "s", 1.0


def _span(results: list[RunResult]) -> float:
    return max((r.end_time for r in results), default=0.0)


def _figure(height: float) -> Figure:
    fig = Figure(figsize=(9, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def utilisation_figure(results: list[RunResult], step: float | None = None) -> Figure:
    """One panel per scheduler: GPUs running jobs, GPUs held idle by partial gangs, capacity."""
    span = _span(results)
    step = step or auto_step(span)
    unit, scale = time_unit(span)
    fig = _figure(1.0 + 2.1 * len(results))
    axes = fig.subplots(len(results), 1, sharex=True, squeeze=False)[:, 0]
    for i, (ax, r) in enumerate(zip(axes, results, strict=True)):
        u = utilisation_series(r, step)
        edges = u.busy.edges / scale
        top = u.busy.values + u.held_idle.values
        if len(edges) > 1:
            ax.stairs(
                u.busy.values,
                edges,
                fill=True,
                color=colour(r.scheduler, i),
                alpha=0.8,
                label="running jobs",
            )
            ax.stairs(
                top,
                edges,
                baseline=u.busy.values,
                fill=True,
                color="#7f7f7f",
                alpha=0.55,
                hatch="//",
                label="held idle by partial gangs",
            )
        ax.axhline(
            r.total_gpus,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"capacity ({r.total_gpus} GPUs)",
        )
        ax.set_ylim(0, max(r.total_gpus, float(top.max()) if top.size else 0.0) * 1.08 or 1)
        ax.set_xlim(0, span / scale if span else 1)
        ax.set_title(_panel_title(r, u), loc="left", fontsize=10)
        ax.set_ylabel("GPUs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, **OUTSIDE)
    axes[-1].set_xlabel(f"virtual time ({unit})")
    fig.suptitle(f"GPU use over time: {_scenario(results)} (mean per {step:g} s bin)")
    return fig


def _panel_title(r: RunResult, u: Utilisation) -> str:
    """Scheduler plus the exact held-idle figure, flagging when the drawing shows less of it."""
    row = summarize(r)
    title = (
        f"{r.scheduler}: {row['gpu_utilisation']:.1%} utilised, "
        f"{row['idle_held_gpu_h']} GPU-h held idle"
    )
    drawn = float(np.sum(u.held_idle.values * np.diff(u.held_idle.edges)))
    undrawn = drawn < 0.9 * r.idle_held_gpu_seconds
    if undrawn:
        title += f" (drawn: {drawn / 3600:.2f})"
    if row["lost_gpu_h"]:
        title += f", {row['lost_gpu_h']} GPU-h lost to failures"
    if undrawn or row["lost_gpu_h"]:
        title += "\nholds abandoned or killed before their job ran are not drawn"
    return title


def queue_length_figure(results: list[RunResult], step: float | None = None) -> Figure:
    """Jobs submitted but not started, one line per scheduler."""
    span = _span(results)
    step = step or auto_step(span)
    unit, scale = time_unit(span)
    fig = _figure(4.2)
    ax = fig.subplots()
    top = 1.0
    for i, r in enumerate(results):
        s = queue_length_series(r, step)
        if len(s.edges) > 1:
            top = max(top, float(s.values.max()))
            ax.stairs(
                s.values,
                s.edges / scale,
                color=colour(r.scheduler, i),
                linewidth=1.8,
                linestyle=dashes(i),
                baseline=None,
                label=r.scheduler,
            )
    ax.set_xlim(0, span / scale if span else 1)
    ax.set_ylim(0, top * 1.08)
    ax.set_xlabel(f"virtual time ({unit})")
    ax.set_ylabel("jobs waiting (submitted, not started)")
    ax.set_title(f"Queue length: {_scenario(results)} (mean per {step:g} s bin)")
    ax.grid(alpha=0.3)
    ax.legend(**OUTSIDE)
    return fig


def jct_cdf_figure(results: list[RunResult]) -> Figure:
    """Fraction of all jobs completed within a given JCT, per scheduler.

    Normalised by all jobs, not completed ones, so a run that leaves jobs stuck plateaus
    below 1 instead of looking as good as one that finished them.
    """
    longest = max(
        (j.end - j.submit for r in results for j in r.jobs if j.end is not None), default=0.0
    )
    unit, scale = time_unit(longest)
    fig = _figure(4.2)
    ax = fig.subplots()
    for i, r in enumerate(results):
        jct = np.sort([j.end - j.submit for j in r.jobs if j.end is not None]) / scale
        total = len(r.jobs) or 1
        xs = np.concatenate([[0.0], jct, [longest / scale * 1.05 if longest else 1.0]])
        ys = np.concatenate([[0.0], np.arange(1, len(jct) + 1) / total, [len(jct) / total]])
        ax.step(
            xs,
            ys,
            where="post",
            color=colour(r.scheduler, i),
            linewidth=1.8,
            linestyle=dashes(i),
            label=f"{r.scheduler} ({len(jct)}/{len(r.jobs)} completed)",
        )
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"job completion time, submit to end ({unit})")
    ax.set_ylabel("fraction of all jobs completed")
    ax.set_title(f"JCT distribution: {_scenario(results)}")
    ax.grid(alpha=0.3)
    ax.legend(**OUTSIDE)
    return fig


def _scenario(results: list[RunResult]) -> str:
    return ", ".join(dict.fromkeys(r.scenario for r in results))


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG, without metadata that would differ between identical renders."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def render_plots(results: list[RunResult], step: float | None = None) -> dict[str, bytes]:
    """File name -> PNG bytes for every comparison plot, in report order."""
    with matplotlib.style.context("default"):
        return {
            "utilisation.png": png_bytes(utilisation_figure(results, step)),
            "queue_length.png": png_bytes(queue_length_figure(results, step)),
            "jct_cdf.png": png_bytes(jct_cdf_figure(results)),
        }
