"""The `phalanx` command line: the controller, benchmarks, simulation, policies, CRDs,
webhook configurations."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from controller.replay.command import Outcome
    from controller.settings import Settings

app = typer.Typer(
    help="Phalanx: all-or-nothing gang scheduling for Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Performance benchmarks (figures as a table and JSON).")
app.add_typer(bench_app, name="bench")
console = Console()


PolicyOption = Annotated[
    str | None,
    typer.Option(help='A policy name or {"name": ..., "params": {...}} (default: settings).'),
]


def _error(message: object) -> None:
    """A user mistake in red, each line as one line: no markup, no wrapping."""
    console.print(Text(str(message), style="red"), soft_wrap=True)


def _settings(**chosen: str | None) -> Settings:
    """Controller settings (PHALANX_* env) with the options given; errors end the command."""
    from controller.settings import Settings, SettingsError

    try:
        return Settings.load(**{k: v for k, v in chosen.items() if v is not None})
    except SettingsError as err:
        console.print(f"[red]{err}[/]")
        raise typer.Exit(2) from None


@bench_app.command("engine")
def bench_engine(
    nodes: Annotated[int, typer.Option(min=1, help="Nodes, each with 8 DRA GPUs.")] = 1000,
    gangs: Annotated[int, typer.Option(min=1, help="Pending gangs in the backlog.")] = 5000,
    incremental: Annotated[int, typer.Option(min=0, help="Incremental cycles to time.")] = 100,
    repeats: Annotated[
        int,
        typer.Option(
            min=1, help="Runs of fill and cycles, each in a fresh process; per-cycle medians."
        ),
    ] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic backlog.")] = 7,
    backlog: Annotated[
        list[int] | None,
        typer.Option(min=1, help="Backlog sizes to time an incremental cycle at (repeat)."),
    ] = None,
    ordering: PolicyOption = None,
    preemption: PolicyOption = None,
    placement: PolicyOption = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here.")
    ] = None,
) -> None:
    """Fill a synthetic DRA GPU cluster from a gang backlog, then time incremental cycles."""
    from controller.bench.engine import BACKLOGS, TARGETS, backlog_scaling, run
    from controller.bench.synthetic import ClusterShape

    chosen = _settings(ordering=ordering, preemption=preemption, placement=placement)
    shape = ClusterShape(nodes=nodes, gangs=gangs, seed=seed)
    with console.status("filling the synthetic cluster..."):
        figures = run(shape, incremental, chosen.policy_selection(), repeats)
    sizes = tuple(sorted(backlog or BACKLOGS))
    with console.status(f"timing incremental cycles at backlogs of {sizes}..."):
        scaling, targets, met = backlog_scaling(
            shape, incremental, chosen.policy_selection(), sizes
        )
    _print_bench(
        "phalanx bench engine",
        {**figures.as_dict(), **scaling},
        {**TARGETS, **targets},
        {**figures.verdicts(), **met},
        json_out,
    )


@bench_app.command("policies")
def bench_policies(
    orderings: Annotated[
        list[str] | None,
        typer.Option("--ordering", help="Ordering policies to compare (default: all)."),
    ] = None,
    nodes: Annotated[int, typer.Option(min=1, help="Nodes, each with 8 DRA GPUs.")] = 1000,
    gangs: Annotated[int, typer.Option(min=1, help="Pending gangs in the backlog.")] = 5000,
    incremental: Annotated[int, typer.Option(min=1, help="Incremental cycles to time.")] = 100,
    repeats: Annotated[int, typer.Option(min=1, help="Runs per policy; the fastest counts.")] = 2,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here.")
    ] = None,
) -> None:
    """`bench engine` under each ordering policy, as a ratio of its engine time to FIFO's."""
    from controller.bench.engine import ORDERING_SLOWDOWN_TARGETS, compare_orderings
    from controller.bench.synthetic import ClusterShape
    from policies.registry import available

    names = orderings or [n for n in sorted(available("ordering")) if n != "priority"]
    with console.status("running the engine benchmark under each ordering policy..."):
        figures = compare_orderings(
            ClusterShape(nodes=nodes, gangs=gangs), names, incremental, repeats
        )
    targets = {f"{n}_slowdown": t for n, t in ORDERING_SLOWDOWN_TARGETS.items() if n in names}
    met = {k: float(figures[k]) <= t for k, t in targets.items()}
    _print_bench(
        "phalanx bench policies (engine time vs priority FIFO)", figures, targets, met, json_out
    )


@bench_app.command("sim")
def bench_sim_command(
    scenario: Annotated[
        list[str] | None,
        typer.Option(help="Shipped scenario to run (repeat; default: philly-like and busy)."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here.")
    ] = None,
) -> None:
    """Run large shipped scenarios under phalanx, then time the bare event kernel."""
    from simulations.bench import SCENARIOS, bench_sim

    names = tuple(scenario or SCENARIOS)
    with console.status(f"simulating {', '.join(names)}..."):
        figures = bench_sim(names)
    targets = figures.pop("targets")
    met = figures.pop("met")
    assert isinstance(targets, dict) and isinstance(met, dict)
    _print_bench(f"phalanx bench sim ({', '.join(names)})", figures, targets, met, json_out)


@bench_app.command("emulator")
def bench_emulator(
    nodes: Annotated[int, typer.Option(min=1, help="Nodes to create.")] = 1000,
    pods: Annotated[int, typer.Option(min=1, help="Pods to create and bind.")] = 10_000,
    watchers: Annotated[int, typer.Option(min=1, help="Watches on all pods.")] = 20,
    probes: Annotated[int, typer.Option(min=1, help="Single writes timed to every watcher.")] = 200,
    profile: Annotated[
        Path | None, typer.Option(help="Write a pyinstrument profile of the server here.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here.")
    ] = None,
) -> None:
    """Drive the API emulator (its own process) with nodes, pods, bindings and watchers."""
    from emulator.bench import TARGETS, run

    with console.status("driving the API emulator..."):
        figures = run(nodes, pods, watchers, probes, profile)
    _print_bench("phalanx bench emulator", figures.as_dict(), TARGETS, figures.verdicts(), json_out)


@bench_app.command("controller")
def bench_controller(
    mode: Annotated[
        str, typer.Option(help="gangjob: the controller makes pods and claims; foreign: we do.")
    ] = "gangjob",
    nodes: Annotated[
        int | None,
        typer.Option(min=1, help="Nodes, each with a slice of 8 GPUs [100; cold start 1000]."),
    ] = None,
    gangs: Annotated[
        int | None, typer.Option(min=1, help="Gangs to submit [100; cold start 2000].")
    ] = None,
    pods_per_gang: Annotated[int, typer.Option(min=1, help="Pods per gang, 1 GPU each.")] = 8,
    qps: Annotated[float, typer.Option(min=0.001, help="Client QPS (kube-scheduler: 50).")] = 50.0,
    burst: Annotated[int, typer.Option(min=1, help="Client burst (kube-scheduler: 100).")] = 100,
    unthrottled: Annotated[
        bool, typer.Option("--unthrottled", help="No client rate limit (ignores QPS, burst).")
    ] = False,
    cold_start: Annotated[
        bool,
        typer.Option(
            "--cold-start",
            help="The cluster and its pending GangJobs exist before the controller starts: "
            "time to its first cycle.",
        ),
    ] = False,
    profile: Annotated[
        Path | None,
        typer.Option(
            help="Write pyinstrument profiles of the emulator and the controller over the "
            "measured span into this folder."
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here.")
    ] = None,
) -> None:
    """Run the controller (its own process) on the API emulator (another) and bind gangs."""
    from controller.bench.controller import (
        COLD_START_SHAPE,
        UNTHROTTLED,
        Shape,
        run,
        run_cold_start,
        targets,
        verdicts,
    )

    if unthrottled:
        qps, burst = UNTHROTTLED, int(UNTHROTTLED)
    default_nodes, default_gangs = COLD_START_SHAPE if cold_start else (100, 100)
    shape = Shape(
        nodes=nodes or default_nodes, gangs=gangs or default_gangs, pods_per_gang=pods_per_gang
    )
    try:
        if cold_start:
            if mode != "gangjob":
                raise ValueError("--cold-start starts from pending GangJobs: use --mode gangjob")
            with console.status(
                f"cold start: {shape.nodes} nodes, {shape.gangs} pending GangJobs..."
            ):
                figures = run_cold_start(shape, qps=qps, burst=burst)
        else:
            with console.status(f"binding {shape.pods} pods in {mode} mode..."):
                figures = run(shape, mode=mode, qps=qps, burst=burst, profile=profile)
    except (ValueError, RuntimeError) as exc:
        _error(exc)
        raise typer.Exit(2) from None
    title = f"phalanx bench controller ({figures['mode']})"
    _print_bench(title, figures, targets(figures), verdicts(figures), json_out)


@bench_app.command("foreign-gang")
def bench_foreign_gang(
    pods: Annotated[int, typer.Option(min=1, help="Pods in the gang.")] = 2000,
    min_count: Annotated[
        int | None, typer.Option(min=1, help="The gang's size annotation [--pods].")
    ] = None,
    order: Annotated[
        list[str] | None,
        typer.Option(help="claims-first or pods-first (repeatable) [both]."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here.")
    ] = None,
) -> None:
    """The caches' CPU for forming one foreign gang of `pods` pods (no API server)."""
    from controller.bench.foreign_gang import ORDERS, run

    figures: dict[str, object] = {}
    try:
        for name in order or ORDERS:
            with console.status(f"forming a {pods}-pod foreign gang, {name}..."):
                found = run(pods, name, min_count)
            figures.update({f"{name}.{k}": v for k, v in found.items() if k != "order"})
    except ValueError as exc:
        _error(exc)
        raise typer.Exit(2) from None
    _print_bench("phalanx bench foreign-gang", figures, {}, {}, json_out)


def _print_bench(
    title: str,
    figures: Mapping[str, object],
    targets: Mapping[str, float],
    met: Mapping[str, bool],
    json_out: Path | None,
) -> None:
    """A figures table with targets (throughputs are floors, the rest ceilings), then JSON."""
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    for key, value in figures.items():
        target = ""
        if key in targets:
            sign = ">=" if key.endswith("_per_s") else "<=" if "writes" in key else "<"
            verdict = "[green]met[/]" if met[key] else "[red]missed[/]"
            target = f"{sign} {targets[key]:g} {verdict}"
        table.add_row(key, _cell(value), target)
    console.print(table)
    payload = json.dumps({"figures": figures, "targets": targets, "met": met}, indent=2)
    print(payload)
    if json_out is not None:
        json_out.write_text(payload + "\n")


@app.command("simulate")
def simulate(
    scenario: Annotated[
        Path | None, typer.Argument(help="Scenario YAML; the built-in default if omitted.")
    ] = None,
    scheduler: Annotated[
        list[str] | None, typer.Option(help="Run only these schedulers (repeatable).")
    ] = None,
    check: Annotated[bool, typer.Option(help="Check the invariants after every event.")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write JSON, CSV, PNG plots and a self-contained report.html here."),
    ] = None,
) -> None:
    """Run a scenario under each of its schedulers on virtual time and compare them."""
    from simulations.metrics import summarize
    from simulations.report import write_outputs
    from simulations.run import Simulation, never_fit_warnings
    from simulations.scenario import ScenarioError, load_scenario, shipped_scenario

    try:
        sc = load_scenario(scenario) if scenario is not None else shipped_scenario("default")
    except ScenarioError as err:
        _error(err)
        raise typer.Exit(2) from None
    names = scheduler or list(sc.schedulers)
    unknown = sorted(set(names) - {"phalanx", "per-pod", "gang-timeout"})
    if unknown:
        console.print(
            f"[red]unknown scheduler {', '.join(unknown)}[/]; use phalanx, per-pod or gang-timeout"
        )
        raise typer.Exit(2)
    rows = []
    results = []
    for i, name in enumerate(names):
        sim = Simulation(sc, name, check=check)
        if i == 0:  # the same jobs under every scheduler: warn once, before any run
            for warning in never_fit_warnings(sim.never_fit):
                console.print(Text(warning, style="yellow"), soft_wrap=True)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"{sc.name} under {name}", total=None)
            result = sim.run(progress=_advance(bar, task))
        if result.violations:
            _error(f"invariant violated under {name}: {result.violations[0]}")
            raise typer.Exit(1)
        if result.policy_faults:
            console.print(
                Text(
                    f"{result.policy_faults} policy faults under {name} (the gangs they were "
                    "deciding stayed pending); first: " + " | ".join(result.first_faults),
                    style="yellow",
                ),
                soft_wrap=True,
            )
        results.append(result)
        rows.append(summarize(result))
    from policies.routing import DEFAULTS

    chosen = " / ".join(
        (c or d).name
        for k in ("ordering", "preemption", "placement")
        if (d := getattr(DEFAULTS, k)) is not None
        for c in [getattr(sc.policies, k)]
    )
    table = Table(title=f"phalanx simulate: {sc.name}", caption=f"policies: {chosen}")
    table.add_column("figure")
    for row in rows:
        table.add_column(str(row["scheduler"]), justify="right")
    for key in rows[0]:
        if key not in ("scenario", "scheduler"):
            table.add_row(key, *["-" if row[key] is None else str(row[key]) for row in rows])
    console.print(table)
    for row in rows:
        if row["deadlock_at_s"] is not None:
            console.print(
                f"{row['scheduler']}: deadlocked at t={row['deadlock_at_s']} s with "
                f"{row['stuck']} jobs stuck, holding {row['idle_held_gpu_h']} GPU-hours idle"
            )
        if row["never_fit"]:
            console.print(
                f"{row['scheduler']}: {row['never_fit']} jobs can never fit "
                "(see the warnings above)"
            )
    if json_out is not None:
        json_out.write_text(json.dumps(rows, indent=2) + "\n")
    if out is not None:
        with console.status(f"writing report to {out}..."):
            paths = write_outputs(results, out, description=sc.description)
        report = next(p for p in paths if p.name == "report.html")
        console.print(f"wrote {len(paths)} files; open {report}")


@app.command("sweep")
def sweep(
    spec_path: Annotated[
        Path, typer.Argument(help="Sweep YAML: scenario, schedulers, seeds, grid.")
    ],
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: CPU count).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Run on this Ray cluster (needs the ray extra).")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write all runs here.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write the table here.")] = None,
    markdown_out: Annotated[
        Path | None, typer.Option("--markdown", help="Write the shown table as Markdown here.")
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(help="Comma-separated summary metrics to show (default: the headline)."),
    ] = None,
) -> None:
    """Run a grid of schedulers x variants x parameters x seeds; mean and 95% CI over seeds.

    The table shows only the axes that vary; JSON and CSV keep everything. A run that
    fails is reported (and the exit code is 1) but does not stop the others.
    """
    from simulations.scenario import ScenarioError
    from simulations.sweep import SweepError, load_sweep, run_sweep

    try:
        spec = load_sweep(spec_path)
    except (SweepError, ScenarioError) as err:
        _error(err)
        raise typer.Exit(2) from None
    try:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("sweeping", total=None)
            result = run_sweep(
                spec,
                workers=workers,
                ray_address=ray_address,
                progress=_advance(bar, task),
            )
    except ScenarioError as err:
        _error(err)
        raise typer.Exit(2) from None
    except SweepError as err:  # the grid, checked once the scenario is read
        _error("\n".join(f"{spec_path}: {line}" for line in str(err).splitlines()))
        raise typer.Exit(2) from None
    rows = result.table()
    axes = [
        k
        for k in ["scheduler", "variant", *spec.parameters]
        if len({json.dumps(r.get(k), sort_keys=True, default=str) for r in rows}) > 1
    ] or ["scheduler"]
    wanted = metrics.split(",") if metrics else list(HEADLINE_METRICS)
    measured = rows and any(k.endswith("_mean") for k in rows[0])
    unknown = [m for m in wanted if metrics and measured and f"{m}_mean" not in rows[0]]
    if unknown:
        known = ", ".join(k[: -len("_mean")] for k in rows[0] if k.endswith("_mean"))
        console.print(f"[red]--metrics: unknown {', '.join(unknown)}; known: {known}[/]")
        raise typer.Exit(2)
    shown = [m for m in wanted if rows and f"{m}_mean" in rows[0]]
    counts = ["n", "failed"] if rows and "failed" in rows[0] else ["n"]
    header = [*axes, *counts, *shown]
    body = [
        [_cell(row.get(k)) for k in [*axes, *counts]]
        + [_mean_ci(row[f"{m}_mean"], row[f"{m}_ci95"]) for m in shown]
        for row in rows
    ]
    table = Table(title=f"phalanx sweep: {spec_path.name} ({len(result.runs)} runs, mean ± 95% CI)")
    for key in header:
        table.add_column(key, justify="left" if key in axes else "right")
    for cells in body:
        table.add_row(*cells)
    console.print(table)
    if markdown_out is not None:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        markdown_out.write_text("\n".join(lines) + "\n")
    if json_out is not None:
        json_out.write_text(result.to_json())
    if csv_out is not None:
        csv_out.write_text(result.to_csv())
    failures = result.failures()
    for failure in failures:
        _error(failure)
    if failures:
        raise typer.Exit(1)


def _advance(bar: Progress, task: TaskID) -> Callable[[int, int], None]:
    """A progress callback that moves one task of a rich progress bar."""

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return advance


HEADLINE_METRICS = (
    "completed",
    "jct_mean_s",
    "jct_p95_s",
    "gpu_utilisation",
    "idle_held_gpu_h",
    "wasted_gpu_h",
    "preemptions",
    "lost_gpu_h",
    "fairness_jain",
    "slowdown_fairness_jain",
)


def _mean_ci(mean: object, half: object) -> str:
    if mean is None:
        return "-"
    return _cell(mean) if half is None else f"{_cell(mean)} ± {_cell(half)}"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


@app.command("policies")
def policies_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every selectable policy: kind, name, parameters with defaults, what it does."""
    from pydantic_core import to_jsonable_python

    from policies.registry import describe, problems

    infos = describe()
    broken = problems()
    if as_json:
        rows = [
            {
                "kind": i.kind,
                "name": i.name,
                "summary": i.summary,
                "origin": i.origin,
                "params": [
                    {"name": p.name, "type": p.type, "required": p.required}
                    | (
                        {}
                        if p.required
                        else {"default": to_jsonable_python(p.default, fallback=repr)}
                    )
                    for p in i.params
                ],
            }
            for i in infos
        ]
        print(json.dumps({"policies": rows, "problems": broken}, indent=2))
        return
    table = Table(title="phalanx policies (choose by name; see the README for semantics)")
    for column in ("kind", "name", "parameters", "description", "from"):
        table.add_column(column)
    for i in infos:
        params = "\n".join(str(p) for p in i.params) or "-"
        table.add_row(*(Text(cell) for cell in (i.kind, i.name, params, i.summary, i.origin)))
    console.print(table)
    for name, problem in broken.items():
        console.print(Text(f"plug-in {name} is unusable: ", style="red") + Text(problem))


KubeconfigOption = Annotated[
    Path | None,
    typer.Option(help="A kubeconfig file (default: PHALANX_KUBECONFIG, else in-cluster)."),
]


def _serve(command: str, kubeconfig: Path | None) -> None:
    """Run `phalanx controller` or `phalanx webhook` until SIGTERM or SIGINT; a cluster
    configuration that cannot be used is one line and exit code 2."""
    from controller import runtime
    from controller.kube.manager import ConfigError
    from controller.kube.manager import main as controller_main
    from controller.webhook.run import main as webhook_main

    settings = _settings()
    main = controller_main if command == "controller" else webhook_main
    try:
        runtime.serve(main(settings, kubeconfig or settings.kubeconfig))
    except ConfigError as err:
        _error(err)
        raise typer.Exit(2) from None


@app.command("controller")
def controller_command(kubeconfig: KubeconfigOption = None) -> None:
    """Run the gang-scheduling controller until SIGTERM or SIGINT."""
    _serve("controller", kubeconfig)


@app.command("webhook")
def webhook_command(kubeconfig: KubeconfigOption = None) -> None:
    """Serve only the admission webhook (the controller serves it too) until SIGTERM."""
    _serve("webhook", kubeconfig)


@app.command("emulator")
def emulator_command(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 0,
    tls: Annotated[
        bool,
        typer.Option(
            help="Serve HTTPS with a throwaway CA (kubectl sends tokens only over HTTPS)."
        ),
    ] = True,
    load: Annotated[
        list[Path] | None, typer.Option(help="YAML manifests (files or directories) to create.")
    ] = None,
) -> None:
    """Run the in-process Kubernetes API emulator; prints the kubeconfig path."""
    import contextlib

    from controller import runtime
    from emulator.cli import manifests_in, serve

    def announce(line: str) -> None:
        print(line, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        runtime.serve(
            serve(port=port, tls=tls, manifests=manifests_in(load or []), announce=announce)
        )


CRD_DIRS = (Path("crds"), Path("deploy/default/crds"), Path("deploy/helm/phalanx/crds"))
"""Where `phalanx crds` writes: `crds/` is the source of truth; kustomize and Helm read
files only below their own roots, so the install bases get generated copies."""


@app.command("crds")
def crds(
    out: Annotated[
        list[Path] | None,
        typer.Option(help="Directory for the CRD manifests (repeat; default: crds/ and deploy/)."),
    ] = None,
    check: Annotated[
        bool, typer.Option(help="Only check that the manifests are up to date.")
    ] = False,
) -> None:
    """Write the CustomResourceDefinitions generated from the API models."""
    from controller.api.crdgen import CrdBudgetError, check_crds, write_crds

    dirs = out or list(CRD_DIRS)
    try:
        stale = {d: check_crds(d) for d in dirs}
    except CrdBudgetError as error:
        for problem in error.problems:
            console.print(Text(problem, style="red"))
        raise typer.Exit(1) from error
    if check:
        for d, names in stale.items():
            if names:
                console.print(
                    f"[red]stale CRDs in {d}: {', '.join(names)}[/]; "
                    "run `phalanx crds` to regenerate"
                )
        if any(stale.values()):
            raise typer.Exit(1)
        console.print(f"CRDs in {', '.join(map(str, dirs))} are up to date")
        return
    for d in dirs:
        for path in write_crds(d):
            console.print(f"wrote {path}")


@app.command("webhook-configs")
def webhook_configs(
    check: Annotated[
        bool, typer.Option(help="Only check that deploy/'s configurations are up to date.")
    ] = False,
    root: Annotated[
        Path, typer.Option(help="The repository, whose deploy/ is written or checked.")
    ] = Path(),
) -> None:
    """Write deploy/'s webhook configurations (kustomize base, Helm chart) from
    controller/webhook/configs.py."""
    from controller.webhook import manifests

    if check:
        stale = manifests.stale(root)
        if stale:
            _error(
                f"stale webhook configurations: {', '.join(map(str, stale))}; "
                "run `phalanx webhook-configs` to regenerate"
            )
            raise typer.Exit(1)
        console.print("webhook configurations in deploy/ are up to date")
        return
    for path in manifests.write(root):
        console.print(f"wrote {path}")


@app.command("replay")
def replay_command(
    scenario: Annotated[
        Path | None, typer.Argument(help="Scenario YAML; the built-in default if omitted.")
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            help="Run on this cluster (a test cluster: it creates Nodes); default: "
            "the built-in API emulator, in this process."
        ),
    ] = None,
    external_controller: Annotated[
        bool,
        typer.Option(help="A controller already runs against the cluster: do not start one."),
    ] = False,
    speed: Annotated[
        float, typer.Option(min=0.001, help="Scenario seconds per wall second (600: 10 min/s).")
    ] = 60.0,
    keep: Annotated[
        bool,
        typer.Option(help="Leave everything in place (on the emulator: serve until Ctrl-C)."),
    ] = False,
    compare: Annotated[
        bool, typer.Option(help="Also run the simulator and report the two side by side.")
    ] = False,
    jobs: Annotated[
        int | None, typer.Option(min=1, help="Replay only the scenario's first N jobs.")
    ] = None,
    qps: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="Client QPS (and burst) of the in-process controller; default: unthrottled.",
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures (and parity) here.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write simulate's report files, and parity.json/.md, here."),
    ] = None,
) -> None:
    """Run a scenario live: its jobs as GangJobs through the real controller, on simulated
    nodes, on the scenario's clock sped up; figures from what the API server showed."""
    import asyncio
    import logging
    import sys

    from controller.logs import configure_json_logs
    from controller.replay.command import outcome_of, run_replay, serve_replay
    from controller.replay.plan import ReplayError, build, first_jobs
    from controller.replay.runner import LiveRun, Options
    from simulations.run import never_fit_warnings
    from simulations.scenario import ScenarioError, load_scenario, shipped_scenario

    try:
        sc = load_scenario(scenario) if scenario is not None else shipped_scenario("default")
        if jobs is not None:
            sc = first_jobs(sc, jobs)
        plan = build(sc, speed)
    except (ScenarioError, ReplayError) as err:
        _error(err)
        raise typer.Exit(2) from None
    for note in plan.notes:
        console.print(Text(f"note: {note}", style="yellow"), soft_wrap=True)
    for warning in never_fit_warnings(plan.never_fit):
        console.print(Text(warning, style="yellow"), soft_wrap=True)
    configure_json_logs("error", stream=sys.stderr)
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # watches cut at the end

    async def main() -> Outcome:
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"{sc.name} live at {speed:g}x", total=len(plan.jobs))

            async def kept(run: LiveRun) -> None:
                bar.stop()
                _print_replay(outcome_of(run, with_simulation=compare), json_out, out)
                console.print("kept: the emulator, controller and kubelets serve until Ctrl-C")
                await asyncio.Event().wait()

            options = Options(
                kubeconfig=kubeconfig,
                external_controller=external_controller,
                keep=keep,
                qps=qps,
                announce=console.print,
                on_progress=_advance(bar, task),
                kept=kept if keep and kubeconfig is None else None,
            )
            return await run_replay(plan, options, with_simulation=compare)

    try:
        outcome = serve_replay(main())
    except ReplayError as err:
        _error(err)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # --keep on the emulator: its report is printed already
        raise typer.Exit(0) from None
    _print_replay(outcome, json_out, out)
    if outcome.live.violations:
        raise typer.Exit(1)


def _print_replay(outcome: Outcome, json_out: Path | None, out: Path | None) -> None:
    from controller.replay.command import write_files
    from simulations.metrics import summarize

    live = summarize(outcome.live)
    parity = outcome.parity
    name = outcome.plan.scenario.name
    table = Table(title=f"phalanx replay: {name} at {outcome.plan.speed:g}x")
    table.add_column("figure")
    if parity is not None:
        for column in ("simulated", "live", "difference"):
            table.add_column(column, justify="right")
        for key, sim, got, diff in parity.figures:
            table.add_row(key, *("-" if v is None else str(v) for v in (sim, got, diff)))
    else:
        table.add_column("live", justify="right")
        for key, value in live.items():
            if key not in ("scenario", "scheduler"):
                table.add_row(key, "-" if value is None else str(value))
    console.print(table)
    console.print(Text(f"time: {outcome.time_mapping()}"), soft_wrap=True)
    if parity is not None:
        summary = parity.summary()
        console.print(Text(f"admission order: {parity.order.message}"), soft_wrap=True)
        console.print(
            Text(
                f"start times: largest error {summary['start_error_max_s']} s "
                f"({summary['start_error_max_cycles']} cycles, {summary['worst_job']}), p95 "
                f"{summary['start_error_p95_s']} s, mean {summary['start_error_mean_s']} s; "
                f"{summary['within_one_cycle']} of {summary['jobs_compared']} jobs within "
                f"one cycle; step error (each admission's own lag) largest "
                f"{summary['step_error_max_s']} s, mean {summary['step_error_mean_s']} s; "
                f"decisions at most {summary['decision_error_max_s']} s off, placement "
                f"(decision to last pod bound) largest {summary['placement_max_s']} s, "
                f"mean {summary['placement_mean_s']} s"
            ),
            soft_wrap=True,
        )
        if parity.failures:
            console.print(Text(f"node failures: {parity.failures}"), soft_wrap=True)
        causes = [t for t in parity.timings if t.cause]
        for t in causes[:10]:
            console.print(Text(f"  {t.job}: {t.cause}"), soft_wrap=True)
        if len(causes) > 10:
            console.print(f"  and {len(causes) - 10} more (parity.md with --out)")
    held = outcome.invariants()
    style = "red" if outcome.live.violations else "green"
    console.print(Text(f"invariants: {held[0]}", style=style), soft_wrap=True)
    for line in held[1:10]:
        console.print(Text(f"  {line}", style=style), soft_wrap=True)
    for note in outcome.run.notes:
        console.print(Text(f"note: {note}", style="yellow"), soft_wrap=True)
    if json_out is not None:
        payload: dict[str, object] = {"live": live}
        if parity is not None:
            payload["parity"] = parity.as_dict()
        json_out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    if out is not None:
        paths = write_files(outcome, out)
        report = next(p for p in paths if p.name == "report.html")
        console.print(f"wrote {len(paths)} files; open {report}")


@bench_app.command("replay")
def bench_replay(
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="Shipped scenario to replay (repeat; default: minimal-deadlock, default)."
        ),
    ] = None,
    speed: Annotated[
        list[float] | None, typer.Option(min=0.001, help="Speeds (repeat; default 60, 600, 6000).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here.")
    ] = None,
) -> None:
    """Replay scenarios live at rising speeds (emulator in its own process) and report how
    far job start times drift from the simulator's."""
    import logging
    import sys

    from controller.logs import configure_json_logs
    from controller.replay.bench import SCENARIOS, SPEEDS, run

    configure_json_logs("error", stream=sys.stderr)
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    names, speeds = tuple(scenario or SCENARIOS), tuple(speed or SPEEDS)
    with console.status(
        f"replaying {', '.join(names)} at {', '.join(f'{s:g}x' for s in speeds)}..."
    ):
        figures, targets, met = run(names, speeds)
    _print_bench(
        "phalanx bench replay (live vs simulated start times)", figures, targets, met, json_out
    )
    console.print(
        "The simulator's per-pod and gang-timeout baselines are not replayed: Phalanx admits "
        "whole gangs, so there is nothing live to compare them with."
    )
