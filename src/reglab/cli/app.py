"""The ``reglab`` commands: train, list, study, report, repro, export (``audit`` is mounted from :mod:`.audit`).

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

Every command writes to ``reglab-runs/<name>/`` unless ``--out`` says otherwise; ``--version`` prints the
version; ``--install-completion`` / ``--show-completion`` are typer's shell completion.
"""
from __future__ import annotations

import csv
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

from .. import __version__
from ..analysis import plots
from ..config import apply_overrides, dumps, load_file, parse_assignment, parse_config, parse_technique
from ..engine.loop import fit
from ..engine.tensorboard import TensorBoard
from ..engine.trained import FORMATS, export as export_model, load as load_trained, verify
from ..errors import ReglabError, ReglabWarning, first_line, os_error_message, unknown
from ..metrics import on_split
from ..repro import REPROS
from ..study.builtin import resolve
from ..study.class_report import study_class_report
from ..study.plan import plan
from ..study.report import render
from ..study.runner import EXECUTORS, folder_name, run_study
from ..study.spec import StudySpec, parse_spec
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
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts verbatim: rich markup would eat "[ray]" and "[default: ...]"
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"reglab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="print reglab's version and exit")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show the Python traceback of a failure (also REGLAB_DEBUG=1)")] = False,
) -> None:
    """reglab: compose regularization techniques onto a baseline, run multi-seed ablations, report what helped."""


app.add_typer(audit_app, name="audit", help="Data checks: near-duplicates (leakage) and record linkage.")


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
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="run name: the run folder is reglab-runs/<name> [default: train-<time>]")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="run folder [default: reglab-runs/<name>]")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out (or --name) from its last checkpoint")] = False,
    tensorboard: Annotated[Optional[Path], typer.Option(help="write TensorBoard event files to DIR/<name>/seed-<seed> (pip install 'reglab[tensorboard]')", metavar="DIR")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the final metrics as one JSON line (last line of stdout)")] = False,
    progress: Annotated[bool, typer.Option(help="show progress: a bar on a terminal, one line per epoch otherwise")] = True,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="settings as key=value, applied last; dotted keys reach nested options: epochs=3 model_options.hidden=[64] (lists in brackets)", show_default=False)] = None,
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
    apply_overrides(raw, overrides or [], "override")
    cfg = parse_config(raw, "config" if config is None else str(config))
    resolve_techniques(cfg.techniques)  # technique names and knobs, before anything is written
    if resume and out is None and name is None:
        raise ReglabError("--resume needs --out or --name (the run folder to continue)")
    name = name or (out.name if out is not None else time.strftime("train-%Y%m%d-%H%M%S"))
    run_dir = out or Path("reglab-runs") / name
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
    callbacks = (TensorBoard(tensorboard / name),) if tensorboard is not None else ()
    result = fit(cfg, data=data, run_dir=run_dir, resume=resume, progress=progress, callbacks=callbacks)[0]
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
    what: Annotated[str, typer.Argument(help="datasets, models, techniques, studies or repro (default: all)")] = "all",
) -> None:
    """List datasets, models, techniques, built-in studies and reproductions with their options, types and defaults."""
    sections = {"datasets": listing.datasets, "models": listing.models, "techniques": listing.techniques,
                "studies": listing.studies, "repro": listing.repros}
    what = {"repros": "repro", "reproductions": "repro"}.get(what, what)
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
    seeds: Annotated[Optional[int], typer.Option(min=1, help="override the study's seeds with 0..N-1 (in an existing folder: trains only the new seeds)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (default), cpu, cuda, cuda:N, mps")] = None,
    grouping: Annotated[Grouping, typer.Option(help="seeds of a configuration: auto (stacked unless a technique or the model prevents it), group (stacked), single (one by one)")] = "auto",
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch threads per run, the same for every executor (numbers depend on it) [default: torch's default here, at most the CPUs this process may use]")] = None,
    sets: Annotated[list[str], typer.Option("--set", help="override a study setting (seeds=2, mode=isolated) or a base run setting (epochs=3, model_options.hidden=[64]) as key=value (repeat)")] = [],  # noqa: B006
    tensorboard: Annotated[Optional[Path], typer.Option(help="write TensorBoard event files to DIR/<study>/<label>-<key>/seed-<seed> (or tensorboard = \"DIR\" in the study file; pip install 'reglab[tensorboard]')", metavar="DIR")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report table as one JSON line (last line of stdout)")] = False,
    progress: Annotated[bool, typer.Option(help="show progress: a bar on a terminal, one line per epoch otherwise")] = True,
) -> None:
    """Run a study: train every configuration x seed the store lacks (resuming an interrupted
    study), then write report.md / report.html / report.json into <out>/report.

    Every configuration is built and checked before the folder is created; the folder is locked
    while the study runs, and holds one study."""
    path = resolve(study)
    raw = load_file(path)
    board = raw.pop("tensorboard", None)  # how to run the file, not part of the study's definition
    if seeds is not None:
        raw["seeds"] = seeds
    study_settings(raw, sets)
    spec = parse_spec(raw, str(path))
    out = out or Path("reglab-runs") / spec.name
    if tensorboard is None and board not in (None, False):
        tensorboard = out / "tensorboard" if board is True else Path(str(board))
    check_folder(out, "--out")
    validate_study(spec, str(path), device=device)
    with folder_lock(out, "study"), store_errors(out / "results.sqlite"):
        summary = run_study(spec, out, executor=executor, workers=workers, ray_address=ray_address, device=device,
                            grouping=grouping, threads=threads, progress=progress, tensorboard=tensorboard,
                            validate=False)
        labels = {p.key: p.label for p in plan(spec)}
        for key, (grouped, why) in summary["decisions"].items():
            shown = folder_name(labels.get(key, ""), key)
            typer.echo(f"seeds of {shown}: {'stacked' if grouped else 'one by one'} ({why})", err=True)
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
    """Re-render a study's report from its results store alone (no training) into <folder>/report
    (a folder written before one folder held one study: <folder>/report/<study> per study).
    Refused while a `reglab study` runs on the folder."""
    if not (folder / "results.sqlite").exists() and (Path("reglab-runs") / folder / "results.sqlite").exists():
        folder = Path("reglab-runs") / folder
    if not (folder / "results.sqlite").is_file():
        raise ReglabError(f"{folder}: no results.sqlite (run `reglab study` with --out {folder} first)")
    with folder_lock(folder, "report"), store_errors(folder / "results.sqlite"):
        raw = Store(folder / "results.sqlite").definition()
        if raw is None:
            raise ReglabError(f"{folder}/results.sqlite holds no study")
        _report(parse_spec(raw, f"{folder}/results.sqlite"), folder, as_json)
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
    name: Annotated[Optional[str], typer.Argument(help="reproduction to run (reglab repro --list shows them)", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output folder [default: reglab-runs/<name>]")] = None,
    quick: Annotated[bool, typer.Option(help="a reduced budget that finishes in minutes (for a first look)")] = False,
    progress: Annotated[bool, typer.Option(help="show progress: bars on a terminal, one line per run or panel otherwise")] = True,
    list_: Annotated[bool, typer.Option("--list", help="list the reproductions with their summaries and exit")] = False,
) -> None:
    """Run a reference-experiment reproduction that is a program rather than an ablation table
    (figures, sweeps); writes RESULTS.md and its plots into the output folder."""
    if list_:
        typer.echo(listing.repros())
        return
    if name is None:
        raise ReglabError(f"repro: name a reproduction (allowed: {', '.join(sorted(REPROS))}) or pass --list")
    if name not in REPROS:
        raise unknown("reproduction", name, REPROS)
    module = REPROS[name]
    folder = out or Path("reglab-runs") / name
    check_folder(folder, "--out")
    result = module.run(folder, quick=quick, progress=progress)
    typer.echo(f"results: {result}")


@app.command("export")
def export_(
    run: Annotated[Path, typer.Argument(help="a run folder (reglab-runs/<name>, a study's checkpoints/<label>-<key>) or a checkpoint file")],
    format: Annotated[str, typer.Option("--format", "-f", help="exported-program (torch.export, .pt2), onnx (pip install 'reglab[onnx]'), torchscript (deprecated by PyTorch)")] = "exported-program",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output file [default: <run folder>/model-seed<seed>.<ext>]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="which seed of the run [default: the smallest]")] = None,
) -> None:
    """Export a trained run's model (its selected epoch, every technique's model transformation and the
    input normalization included) and check that the file gives the model's outputs."""
    if format not in FORMATS:
        raise unknown("export format", format, FORMATS)
    model = load_trained(run, seed=seed)
    folder = run if run.is_dir() else run.parent
    path = export_model(model, out or folder / f"model-seed{model.seed}{FORMATS[format]}", format)
    diff = verify(model, path, format)
    if diff is not None and diff > 1e-3:
        raise ReglabError(f"export {format}: {path} gives outputs that differ from the model's by up to {diff:.3g}")
    checked = "not checked (onnxruntime is not installed)" if diff is None else f"max |difference| {diff:.2e} on 5 inputs"
    typer.echo(f"exported {format}: {path} ({checked})")


def study_settings(raw: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """Apply ``--set key=value`` to a study dict: a study field (``seeds``, ``mode``, ``metric``, ...)
    at the top, anything else to ``base`` (``epochs``, ``model_options.hidden``); ``base.`` may be
    written out."""
    for pair in pairs:
        key = pair.partition("=")[0].strip()
        target = raw if key.split(".")[0] in StudySpec.model_fields else raw.setdefault("base", {})
        apply_overrides(target, [pair], "--set")
    return raw


if __name__ == "__main__":
    main()
