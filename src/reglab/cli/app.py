"""The ``reglab`` commands: train, list, study, report, repro (``audit`` is mounted from :mod:`.audit`).

The error boundary (:class:`Boundary`, the command group) turns every failure into one line on
stderr and an exit code, never a traceback (unless asked for with ``reglab --debug ...`` or
``REGLAB_DEBUG=1``):

- bad input and refusals of the environment (:class:`~reglab.errors.ReglabError`, ``OSError`` such as
  a full disk, a read-only folder or a name the file system refuses, a file that is not UTF-8, a
  results store that is not SQLite or is corrupted): ``error: <file or field>: <what to do>``, exit 2;
- a bad option value or a missing argument: ``error: Invalid value for '--workers': ...``, exit 2;
- Ctrl-C (SIGINT): ``interrupted; run the same command again to resume``, exit 130 (128 + SIGINT, the
  shell convention); every store write is one SQLite transaction and every checkpoint one atomic
  rename, so the folder stays consistent;
- anything else is a bug: ``error: internal error: ...`` with a pointer to ``--debug``, exit 1.

Warnings of reglab (:class:`~reglab.errors.ReglabWarning`) print as one ``warning: ...`` line.
"""
from __future__ import annotations

import csv
import json
import os
import sqlite3
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from typer.core import TyperGroup

from ..analysis import plots
from ..config import load_file, parse_assignment, parse_config, parse_technique
from ..engine.loop import fit
from ..errors import ReglabError, ReglabWarning, first_line, os_error_message, unknown
from ..repro import REPROS
from ..study.builtin import resolve
from ..study.class_report import study_class_report
from ..study.report import render
from ..study.runner import EXECUTORS, run_study
from ..study.spec import parse_spec
from ..study.store import Store
from ..study.validate import validate_config, validate_study
from ..techniques import resolve_techniques
from . import listing
from .audit import app as audit_app
from .output import check_folder, folder_lock

INTERRUPTED = "interrupted; run the same command again to resume"


def user_message(err: Exception) -> tuple[str, int]:
    """The one-line message and exit code of a failure (see the module docstring)."""
    if isinstance(err, ReglabError):
        return str(err), 2
    if isinstance(err, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({first_line(err)}); save it as UTF-8", 2
    if isinstance(err, OSError):
        return os_error_message(err), 2
    if isinstance(err, sqlite3.DatabaseError):
        return f"results store: {store_advice(err)}", 2
    return (f"internal error: {type(err).__name__}: {first_line(err)} (run `reglab --debug ...` for the traceback, "
            "and please report it)"), 1


def store_advice(err: sqlite3.DatabaseError) -> str:
    """What a SQLite error on a results store means and what to do about it."""
    text = str(err)
    advice = {
        "file is not a database": "not a SQLite database, so not a reglab results store (move it away, or use another folder)",
        "database disk image is malformed": "the results store is corrupted (move it away to start over, or restore a copy)",
        "database or disk is full": "disk full while writing the results store (free some space, then run the same command again to resume)",
        "readonly database": "the results store is read-only (make it writable, or use another folder)",
        "unable to open database file": "cannot open the results store (check that its folder exists and is writable)",
        "database is locked": "the results store is locked by another process (wait for it to finish)",
    }
    return next((a for key, a in advice.items() if key in text), first_line(err))


@contextmanager
def store_errors(path: Path) -> Iterator[None]:
    """Turn SQLite errors inside the block into one line naming the results store ``path``."""
    try:
        yield
    except sqlite3.DatabaseError as err:
        raise ReglabError(f"{path}: {store_advice(err)}") from err


def _debug(ctx: typer.Context) -> bool:
    return bool(ctx.params.get("debug")) or os.environ.get("REGLAB_DEBUG", "") not in ("", "0")


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None, *, default: Any) -> None:
    if issubclass(category, ReglabWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        default(message, category, filename, lineno, file, line)


class Boundary(TyperGroup):
    """The ``reglab`` command group with its error boundary (see the module docstring)."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):  # usage errors and exits: handled by main()
            raise
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            typer.echo(INTERRUPTED, err=True)
            raise typer.Exit(130) from None
        except Exception as err:
            if _debug(ctx):
                raise
            message, code = user_message(err)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(code) from None

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the command; a usage error (bad option value, missing argument) is one ``error:`` line
        too, exit 2. Without arguments typer shows the help."""
        args = list(sys.argv[1:] if args is None else args)
        if not args:
            return super().main(args, prog_name, complete_var, standalone_mode=standalone_mode, **extra)
        with warnings.catch_warnings():
            default = warnings.showwarning
            warnings.showwarning = lambda *a, **k: _show_warning(*a, **k, default=default)
            try:
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except typer.TyperException as err:  # typer's usage errors (its vendored click's UsageError)
                context = getattr(err, "ctx", None)
                where = f" (see '{context.command_path} --help')" if context is not None else ""
                message = " ".join(err.format_message().replace("Value error, ", "").split())
                typer.echo(f"error: {message}{where}", err=True)
                code = getattr(err, "exit_code", 2)
            except typer.Abort:
                typer.echo("error: aborted", err=True)
                code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=Boundary,
    help="reglab: compose regularization techniques onto a baseline, run multi-seed ablations, report what helped.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


app.add_typer(audit_app, name="audit", help="Data checks: near-duplicates (leakage) and record linkage.")


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="show the Python traceback of a failure (also REGLAB_DEBUG=1)")] = False,
) -> None:
    """reglab: compose regularization techniques onto a baseline, run multi-seed ablations, report what helped."""


def main() -> None:
    """Console entry point (``reglab``)."""
    app(prog_name="reglab")


def _options(pairs: list[str], what: str) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        try:
            key, value = parse_assignment(pair)
        except ReglabError as err:
            raise ReglabError(f"{what}: {err}") from None
        out[key] = value
    return out


def _techniques(texts: list[str]) -> list[dict[str, Any]]:
    try:
        return [parse_technique(t) for t in texts]
    except ReglabError as err:
        raise ReglabError(f"--technique: {err}") from None


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
    from_file = set(raw)
    flags = {"dataset": dataset, "model": model, "epochs": epochs, "batch_size": batch_size, "seed": seed,
             "metric": metric, "device": device, "amp": amp, "compile": compile_, "channels_last": channels_last}
    raw.update({k: v for k, v in flags.items() if v is not None})
    if data_opt:
        raw["dataset_options"] = {**raw.get("dataset_options", {}), **_options(data_opt, "--data-opt")}
    if model_opt:
        raw["model_options"] = {**raw.get("model_options", {}), **_options(model_opt, "--model-opt")}
    if technique:
        raw["techniques"] = [*raw.get("techniques", []), *_techniques(technique)]
    cfg = parse_config(raw, "config" if config is None else str(config))
    resolve_techniques(cfg.techniques)  # technique names and knobs, before anything is written
    if resume and out is None:
        raise ReglabError("--resume needs --out (the run folder to continue)")
    run_dir = out or Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    check_folder(run_dir, "--out")
    if run_dir.exists() and not resume and any(run_dir.glob("*.pt")):
        raise ReglabError(f"run folder {run_dir} already holds a run; pass --resume to continue it or choose another --out")
    flag_of = {"dataset_options": "--data-opt", "model_options": "--model-opt"}

    def field(name: str) -> str:
        set_by_flag = flags.get(name) is not None or (name in flag_of and (data_opt if name == "dataset_options" else model_opt))
        if config is not None and name in from_file and not set_by_flag:
            return f"{config}: {name}"
        return flag_of.get(name, "--" + name.replace("_", "-"))

    data = validate_config(cfg, cfg.seed, field, "config")
    result = fit(cfg, data=data, run_dir=run_dir, resume=resume, progress=progress)[0]
    write_run(run_dir, result)
    m = result.metrics
    summary = {k: m[k] for k in ("test_accuracy", "val_accuracy", "test_loss", "val_loss", "test_rmse", "val_rmse",
                                 "test_f1_micro", "val_f1_micro") if k in m}
    summary.update(epochs=m["epochs"], best_epoch=m["best_epoch"], seconds=round(m["seconds"], 3), run_dir=str(run_dir))
    typer.echo(", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()),
               err=as_json)
    if as_json:
        typer.echo(json.dumps({**m, "run_dir": str(run_dir)}))


def write_run(run_dir: Path, result: Any) -> None:
    """config.json, metrics.csv (per epoch), metrics.json (final) and PNG plots of one run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(result.config, indent=2))
    keys = list(dict.fromkeys(k for r in result.history for k in r))
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(result.history)
    (run_dir / "metrics.json").write_text(json.dumps({"seed": result.seed, **result.metrics}, indent=2))
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


#: the values typer accepts for --executor and --grouping (anything else is a one-line usage error)
ExecutorName = Literal[tuple(EXECUTORS)]
Grouping = Literal["auto", "group", "single"]


@app.command()
def study(
    study: Annotated[str, typer.Argument(help="built-in study name (reglab list studies) or a TOML/YAML study file")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="study folder (store, checkpoints, report) [default: reglab-runs/<name>]")] = None,
    executor: Annotated[ExecutorName, typer.Option(help="sequential (default), processes, or ray (pip install 'reglab[ray]')")] = "sequential",
    workers: Annotated[Optional[int], typer.Option(min=1, help="worker processes (executor processes) [default: one per GPU, else 2]")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address for ray.init [default: a local Ray]")] = None,
    seeds: Annotated[Optional[int], typer.Option(min=1, help="override the study's number of seeds")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (default), cpu, cuda, cuda:N, mps")] = None,
    grouping: Annotated[Grouping, typer.Option(help="seeds of a configuration: auto (measure), group (stacked), single")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print the report table as one JSON line (last line of stdout)")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Run a study: train every configuration x seed the store lacks (resuming an interrupted
    study), then write report.md / report.html / report.json into <out>/report.

    Every configuration is built and checked before the folder is created; the folder is locked
    while the study runs, and holds one study."""
    path = resolve(study)
    raw = load_file(path)
    if seeds is not None:
        raw["seeds"] = seeds
    spec = parse_spec(raw, str(path))
    out = out or Path("reglab-runs") / spec.name
    check_folder(out, "--out")
    validate_study(spec, str(path), device=device)
    with folder_lock(out, "study"), store_errors(out / "results.sqlite"):
        held = _stored_studies(out)
        if held and spec.name not in held:
            raise ReglabError(f"{out}: holds study '{held[0]}'; a folder holds one study: use another --out for "
                              f"'{spec.name}'")
        summary = run_study(spec, out, executor=executor, workers=workers, ray_address=ray_address, device=device,
                            grouping=grouping, progress=progress)
        for key, (grouped, why) in summary["decisions"].items():
            typer.echo(f"seeds of {key}: {'trained as one group' if grouped else 'trained one by one'} ({why})", err=True)
        _report(spec, out, out / "report", as_json)
    if summary["errors"]:
        for line in summary["errors"]:
            typer.echo(f"failed: {line}", err=True)
        raise typer.Exit(1)


def _stored_studies(folder: Path) -> list[str]:
    """The studies in ``folder``'s results store (none when it has no store yet; creates nothing)."""
    return Store(folder / "results.sqlite").studies() if (folder / "results.sqlite").is_file() else []


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="a study folder (holding results.sqlite), or a study name in reglab-runs/")],
    as_json: Annotated[bool, typer.Option("--json", help="print the report table as one JSON line (last line of stdout)")] = False,
    per_class: Annotated[bool, typer.Option("--per-class", help="also write classes.md/classes.json: the per-class test report of the best configuration (chosen on validation) of a multilabel study, from its checkpoints")] = False,
) -> None:
    """Re-render a study's report from its results store alone (no training) into <folder>/report
    (a folder written before one folder held one study: <folder>/report/<study> per study).
    Refused while a `reglab study` runs on the folder."""
    if not (folder / "results.sqlite").exists() and (Path("reglab-runs") / folder / "results.sqlite").exists():
        folder = Path("reglab-runs") / folder
    if not (folder / "results.sqlite").is_file():
        raise ReglabError(f"{folder}: no results.sqlite (run `reglab study` with --out {folder} first)")
    with folder_lock(folder, "report"), store_errors(folder / "results.sqlite"):
        store = Store(folder / "results.sqlite")
        names = store.studies()
        if not names:
            raise ReglabError(f"{folder}/results.sqlite holds no study")
        for name in names:
            spec = parse_spec(store.study_spec(name), f"{folder}/results.sqlite: study '{name}'")
            _report(spec, folder, folder / "report" / (name if len(names) > 1 else ""), as_json)
        if per_class:
            path = study_class_report(folder)
            typer.echo(path.read_text(), err=as_json)
            typer.echo(f"per-class report: {path}", err=as_json)


def _report(spec: Any, out: Path, report_dir: Path, as_json: bool) -> None:
    table = render(spec, Store(out / "results.sqlite"), report_dir)
    typer.echo((report_dir / "report.md").read_text().split("## Plots")[0].rstrip(), err=as_json)
    typer.echo(f"\nreport: {report_dir / 'report.html'}", err=as_json)
    if as_json:
        typer.echo(json.dumps(table, default=float))


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
    check_folder(folder, "--out")
    result = module.run(folder, quick=quick, progress=progress)
    typer.echo(f"results: {result}")


if __name__ == "__main__":
    main()
