"""The ``reglab`` commands: train, list, study, report, repro (``audit`` is mounted from :mod:`.audit`).

Bad input ends with one line on stderr (``error: ...``) and exit code 2, never a traceback.
"""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..analysis import plots
from ..config import dumps, load_file, parse_assignment, parse_config, parse_technique
from ..engine.loop import fit
from ..errors import ReglabError, unknown
from ..metrics import on_split
from ..repro import REPROS
from ..study.builtin import resolve
from ..study.class_report import study_class_report
from ..study.plan import plan
from ..study.report import render
from ..study.runner import run_study
from ..study.spec import parse_spec
from ..study.store import Store
from ..techniques import resolve_techniques
from . import listing
from .audit import app as audit_app

app = typer.Typer(
    help="reglab: compose regularization techniques onto a baseline, run multi-seed ablations, report what helped.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


app.add_typer(audit_app, name="audit", help="Data checks: near-duplicates (leakage) and record linkage.")


def main() -> None:
    """Console entry point."""
    try:
        app()
    except ReglabError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


def _options(pairs: list[str], what: str) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        try:
            key, value = parse_assignment(pair)
        except ReglabError as err:
            raise ReglabError(f"{what}: {err}") from None
        out[key] = value
    return out


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML/YAML/JSON run config; flags override it")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="dataset: mnist1d (default), digits, mnist, cifar10, csv:PATH, ...")] = None,
    data_opt: Annotated[list[str], typer.Option("--data-opt", help="dataset option key=value (repeat)")] = [],  # noqa: B006
    model: Annotated[Optional[str], typer.Option(help="model: mlp (default), convnet, resnet, ...")] = None,
    model_opt: Annotated[list[str], typer.Option("--model-opt", "-m", help="model option key=value, e.g. hidden=[512,256] (repeat)")] = [],  # noqa: B006
    technique: Annotated[list[str], typer.Option("--technique", "-t", help="technique name[:knob=value,...], e.g. adamw:lr=1e-3 (repeat)")] = [],  # noqa: B006
    epochs: Annotated[Optional[int], typer.Option(help="maximum epochs [default: 30]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="batch size [default: 64]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="run seed [default: 0]")] = None,
    metric: Annotated[Optional[str], typer.Option(help="validation metric selecting the best epoch")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (default), cpu, cuda, cuda:N, mps")] = None,
    amp: Annotated[Optional[str], typer.Option(help="bf16 autocast: auto (on CUDA; default), off, bf16 (also on the CPU: ~3x faster matmuls where it has AVX512-BF16/AMX)")] = None,
    compile_: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model [default: off]")] = None,
    channels_last: Annotated[Optional[str], typer.Option(help="channels_last for convnets: auto (on CUDA; default), off, on")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="run folder [default: runs/train-<time>]")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the final metrics as one JSON line (last line of stdout)")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train one configuration (one seed); write metrics, checkpoints and plots to the run folder."""
    raw: dict[str, Any] = load_file(config) if config else {}
    flags = {"dataset": dataset, "model": model, "epochs": epochs, "batch_size": batch_size, "seed": seed,
             "metric": metric, "device": device, "amp": amp, "compile": compile_, "channels_last": channels_last}
    raw.update({k: v for k, v in flags.items() if v is not None})
    if data_opt:
        raw["dataset_options"] = {**raw.get("dataset_options", {}), **_options(data_opt, "--data-opt")}
    if model_opt:
        raw["model_options"] = {**raw.get("model_options", {}), **_options(model_opt, "--model-opt")}
    if technique:
        raw["techniques"] = [*raw.get("techniques", []), *(parse_technique(t) for t in technique)]
    cfg = parse_config(raw, "config" if config is None else str(config))
    resolve_techniques(cfg.techniques)  # technique names and knobs, before anything is written
    if resume and out is None:
        raise ReglabError("--resume needs --out (the run folder to continue)")
    run_dir = out or Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    if run_dir.exists() and not resume and any(run_dir.glob("*.pt")):
        raise ReglabError(f"run folder {run_dir} already holds a run; pass --resume to continue it or choose another --out")

    result = fit(cfg, run_dir=run_dir, resume=resume, progress=progress)[0]
    write_run(run_dir, result)
    m, metric = result.metrics, result.config["metric"]
    test = on_split(metric, "test")
    typer.echo(f"best epoch {m['best_epoch']} of {m['epochs']} on {metric}: {metric}={m[metric]:.4f}, {test}={m[test]:.4f} "
               f"(last epoch: {metric}={m['last_' + metric]:.4f}, {test}={m['last_' + test]:.4f}); "
               f"{m['seconds']:.1f} s; {run_dir}" + (" -- DIVERGED (non-finite training loss)" if m["diverged"] else ""),
               err=as_json)
    if as_json:
        typer.echo(dumps({**m, "run_dir": str(run_dir)}))


def write_run(run_dir: Path, result: Any) -> None:
    """config.json, metrics.csv (per epoch), metrics.json (final) and PNG plots of one run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(dumps(result.config, indent=2))
    keys = list(dict.fromkeys(k for r in result.history for k in r))
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(result.history)
    (run_dir / "metrics.json").write_text(dumps({"seed": result.seed, **result.metrics}, indent=2))
    metric = result.config["metric"]
    plots.learning_curves({"run": [result.history]}, metric, run_dir / "learning_curves.png")
    if result.trajectory:
        plots.trajectories({"run": [result.trajectory]}, run_dir / "trajectory.png")


@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="datasets, models, techniques or studies (default: all)")] = "all",
) -> None:
    """List datasets, models, techniques and built-in studies with their options and defaults."""
    sections = {"datasets": listing.datasets, "models": listing.models, "techniques": listing.techniques,
                "studies": listing.studies}
    if what != "all" and what not in sections:
        raise ReglabError(f"unknown list '{what}' (allowed: all, {', '.join(sections)})")
    for name, show in sections.items():
        if what in ("all", name):
            typer.echo(show())


@app.command()
def study(
    study: Annotated[str, typer.Argument(help="built-in study name (reglab list studies) or a TOML/YAML study file")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="study folder (store, checkpoints, report) [default: reglab-runs/<name>]")] = None,
    executor: Annotated[str, typer.Option(help="sequential (default), processes, or ray (pip install 'reglab[ray]')")] = "sequential",
    workers: Annotated[Optional[int], typer.Option(help="worker processes (executor processes) [default: one per GPU, else 2]")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address for ray.init [default: a local Ray]")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="override the study's seeds with 0..N-1 (in an existing folder: trains only the new seeds)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (default), cpu, cuda, cuda:N, mps")] = None,
    grouping: Annotated[str, typer.Option(help="seeds of a configuration: auto (stacked unless a technique or the model prevents it), group (stacked), single (one by one)")] = "auto",
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch threads per run, the same for every executor (numbers depend on it) [default: torch's default here]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report table as one JSON line (last line of stdout)")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Run a study: train every configuration x seed the store lacks (resuming an interrupted
    study), then write report.md / report.html / report.json into <out>/report."""
    path = resolve(study)
    raw = load_file(path)
    if seeds is not None:
        if seeds < 1:
            raise ReglabError("--seeds must be >= 1")
        raw["seeds"] = seeds
    spec = parse_spec(raw, str(path))
    out = out or Path("reglab-runs") / spec.name
    summary = run_study(spec, out, executor=executor, workers=workers, ray_address=ray_address, device=device,
                        grouping=grouping, threads=threads, progress=progress)
    labels = {p.key: p.label for p in plan(spec)}
    for key, (grouped, why) in summary["decisions"].items():
        typer.echo(f"seeds of {labels.get(key, key)} ({key}): {'stacked' if grouped else 'one by one'} ({why})", err=True)
    typer.echo(f"runs: {summary['planned']} planned, {summary['reused']} found finished in {out}, "
               f"{summary['trained']} trained", err=True)
    _report(spec, out, as_json)
    if summary["errors"]:
        for line in summary["errors"]:
            typer.echo(f"failed: {line}", err=True)
        raise typer.Exit(1)


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="a study folder (holding results.sqlite), or a study name in reglab-runs/")],
    as_json: Annotated[bool, typer.Option("--json", help="print the report table as one JSON line (last line of stdout)")] = False,
    per_class: Annotated[bool, typer.Option("--per-class", help="also write classes.md/classes.json: the per-class test report of the best configuration (chosen on validation) of a multilabel study, from its checkpoints")] = False,
) -> None:
    """Re-render a study's report from its results store alone (no training)."""
    if not (folder / "results.sqlite").exists() and (Path("reglab-runs") / folder / "results.sqlite").exists():
        folder = Path("reglab-runs") / folder
    if not (folder / "results.sqlite").exists():
        raise ReglabError(f"{folder}: no results.sqlite (run `reglab study` with --out {folder} first)")
    raw = Store(folder / "results.sqlite").definition()
    if raw is None:
        raise ReglabError(f"{folder}/results.sqlite holds no study")
    _report(parse_spec(raw, str(folder / "results.sqlite")), folder, as_json)
    if per_class:
        path = study_class_report(folder)
        typer.echo(path.read_text(), err=as_json)
        typer.echo(f"per-class report: {path}", err=as_json)


def _report(spec: Any, out: Path, as_json: bool) -> None:
    table = render(spec, Store(out / "results.sqlite"), out / "report")
    typer.echo((out / "report" / "report.md").read_text().split("## Plots")[0].rstrip(), err=as_json)
    typer.echo(f"\nreport: {out / 'report' / 'report.html'}", err=as_json)
    if as_json:
        typer.echo(dumps(table))


@app.command()
def repro(
    name: Annotated[str, typer.Argument(help="reproduction to run (reglab list studies shows them)")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output folder [default: reglab-runs/<name>]")] = None,
    quick: Annotated[bool, typer.Option(help="a reduced budget that finishes in minutes (for a first look)")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Run a reference-experiment reproduction that is a program rather than an ablation table
    (figures, sweeps); writes RESULTS.md and its plots into the output folder."""
    if name not in REPROS:
        raise unknown("reproduction", name, REPROS)
    module = REPROS[name]
    folder = out or Path("reglab-runs") / name
    result = module.run(folder, quick=quick, progress=progress)
    typer.echo(f"results: {result}")


if __name__ == "__main__":
    main()
