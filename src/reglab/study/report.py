"""The study report: one table, a verdict, plots; Markdown, self-contained HTML and JSON.

For every configuration: the validation metric (the one that selected each run's best epoch) and
the report metric (by default its test twin) as mean ± standard error over seeds; the paired
difference against the baseline and against the configuration it extends (mean ± SE of the
per-seed differences, seeds paired), a paired t-test across seeds (and Wilcoxon's signed-rank test
when there are at least 6 seeds), the epochs trained and the wall time per run.

The verdict names the step with the largest gain and the steps whose effect is within noise
(p >= 0.05, or fewer than 2 paired seeds). With few seeds a paired test has little power, so
"within noise" means "not shown to differ", not "shown equal". No multiple-comparison correction is
applied; with many steps, read single p-values near 0.05 with care.

Everything is computed from the results store alone (``reglab report`` re-renders it).
"""
from __future__ import annotations

import base64
import html
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ..analysis import plots
from ..metrics import metric_maximized, on_split, recorded_default
from ..techniques import resolve_techniques
from .plan import order_paths, plan
from .spec import StudySpec
from .statistics import mean_se
from .store import Store, StoredRun

ALPHA = 0.05


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, float]:
    """Paired comparison of ``a`` minus ``b`` over their common seeds."""
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    out: dict[str, float] = {"n": len(seeds), "mean": float(d.mean()) if len(d) else math.nan,
                             "se": math.nan, "p_t": math.nan, "p_wilcoxon": math.nan}
    if len(d) >= 2:
        out["se"] = float(d.std(ddof=1) / math.sqrt(len(d)))
        if np.allclose(d, d[0]):
            out["p_t"] = 0.0 if d[0] != 0 else 1.0
        else:
            out["p_t"] = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    if len(d) >= 6 and np.any(d != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
    return out


def _metrics(spec: StudySpec, runs: list[StoredRun]) -> tuple[str, str]:
    keys = set().union(*(r.metrics for r in runs)) if runs else set()
    metric = spec.metric or recorded_default(keys)
    report_metric = spec.report_metric or on_split(metric, "test")
    return metric, report_metric


def build_table(spec: StudySpec, store: Store) -> dict[str, Any]:
    """The report's numbers as plain data (what ``--json`` prints)."""
    runs = store.runs(spec.name)
    metric, report_metric = _metrics(spec, runs)
    maximize = metric_maximized(report_metric)
    by_key: dict[str, dict[int, StoredRun]] = defaultdict(dict)
    for r in runs:
        by_key[r.config_key][r.seed] = r
    planned = plan(spec)
    base_key = planned[0].key

    def values(key: str, name: str) -> dict[int, float]:
        return {s: r.metrics[name] for s, r in by_key.get(key, {}).items() if name in r.metrics}

    rows = []
    for i, p in enumerate(planned):
        seeds = by_key.get(p.key, {})
        val_m, val_se = mean_se(list(values(p.key, metric).values()))
        rep_m, rep_se = mean_se(list(values(p.key, report_metric).values()))
        row: dict[str, Any] = {
            "index": i, "label": p.label, "key": p.key, "added": p.added, "steps": p.steps, "seeds": len(seeds),
            "val_mean": val_m, "val_se": val_se, "report_mean": rep_m, "report_se": rep_se,
            "per_seed": values(p.key, report_metric),
            "epochs": mean_se([r.metrics.get("epochs", math.nan) for r in seeds.values()])[0],
            "seconds": mean_se([r.metrics.get("seconds", math.nan) for r in seeds.values()])[0],
            "group_size": max((r.group_size or 1 for r in seeds.values()), default=1),
        }
        if i > 0:
            row["vs_baseline"] = paired(values(p.key, report_metric), values(base_key, report_metric))
        if p.compare_to is not None:
            row["vs_previous"] = paired(values(p.key, report_metric), values(p.compare_to, report_metric))
        rows.append(row)
    table = {"study": spec.name, "mode": spec.mode, "metric": metric, "report_metric": report_metric,
             "maximize": maximize, "seeds": spec.seed_list, "rows": rows}
    if spec.mode == "orders":
        table["orders"] = _orders(spec, values, report_metric)
    table["verdict"] = verdict(table)
    return table


def _orders(spec: StudySpec, values: Any, report_metric: str) -> list[dict[str, Any]]:
    gains: dict[str, list[float]] = defaultdict(list)
    for path in order_paths(spec):
        for step, before, after in path:
            d = paired(values(after, report_metric), values(before, report_metric))
            gains[step].append(d["mean"])
    return [{"step": s, "gains": g, "mean": float(np.mean(g)), "min": float(np.min(g)), "max": float(np.max(g))}
            for s, g in gains.items()]


def verdict(table: dict[str, Any]) -> dict[str, Any]:
    sign = 1 if table["maximize"] else -1
    steps = [r for r in table["rows"] if "vs_previous" in r and r["vs_previous"]["n"] > 0]
    if table["mode"] == "orders":
        steps = []
    out: dict[str, Any] = {"largest_gain": None, "within_noise": [], "significant_gains": [], "significant_losses": []}
    if table["mode"] == "orders" and table.get("orders"):
        best = max(table["orders"], key=lambda o: sign * o["mean"])
        out["largest_gain"] = {"step": best["step"], "mean": best["mean"]}
        flips = [o["step"] for o in table["orders"] if (o["min"] > 0) != (o["max"] > 0)]
        out["order_dependent"] = flips
    for r in steps:
        d = r["vs_previous"]
        name = r["added"]
        if d["n"] < 2 or not (d["p_t"] < ALPHA):
            out["within_noise"].append(name)
        elif sign * d["mean"] > 0:
            out["significant_gains"].append(name)
        else:
            out["significant_losses"].append(name)
    best = max(steps, key=lambda r: sign * r["vs_previous"]["mean"], default=None)
    if best is not None and sign * best["vs_previous"]["mean"] > 0:
        out["largest_gain"] = {"step": best["added"], "mean": best["vs_previous"]["mean"],
                               "se": best["vs_previous"]["se"], "p_t": best["vs_previous"]["p_t"]}
    rows = table["rows"]
    if len(rows) > 1:
        final = rows[-1] if table["mode"] == "incremental" else max(rows, key=lambda r: sign * r["report_mean"])
        out["best_configuration"] = final["label"] if table["mode"] != "incremental" else rows[-1]["label"]
        out["final_vs_baseline"] = final.get("vs_baseline")
    return out


# ---- rendering --------------------------------------------------------------------------------
#: characters with an inline meaning in CommonMark/GitHub Markdown (emphasis, code, links, HTML,
#: tables, strikethrough, math, entities); each is escaped with a backslash (CommonMark 0.31,
#: section 2.4 "Backslash escapes")
_MD_INLINE = re.compile(r"([\\`*_\[\]<>|~$&])")
#: what starts a block (heading, list, quote, thematic break) at the beginning of a line
_MD_BLOCK_START = re.compile(r"^(\s*\d*)([#+=>.)-])", re.M)


def md_text(text: str, block: bool = False) -> str:
    """User text (a step name, a label, a description) escaped for Markdown, so that it shows as
    written: inline markup characters get a backslash; with ``block`` (text that starts a line, like
    a paragraph), so does whatever would start a heading, list or quote at the beginning of a line."""
    text = _MD_INLINE.sub(r"\\\1", text)
    return _MD_BLOCK_START.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", text) if block else text


def plot_text(text: str) -> str:
    """User text for a matplotlib label, shown as written: every ``$`` escaped so that it never
    starts mathtext (Matplotlib, "Writing mathematical expressions"), and a leading underscore, which
    hides a legend entry, preceded by a space."""
    text = text.replace("$", r"\$")
    return f" {text}" if text.startswith("_") else text


def _names_escaped(value: Any, names: set[str]) -> Any:
    """``value`` (the report table or a part of it) with every string in ``names`` (the study's
    user-written configuration labels and step names) escaped by :func:`md_text`."""
    if isinstance(value, str):
        return md_text(value) if value in names else value
    if isinstance(value, dict):
        return {k: _names_escaped(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_names_escaped(v, names) for v in value]
    return value


def _is_fraction(metric: str) -> bool:
    return any(w in metric for w in ("accuracy", "f1", "error"))


def _fmt(value: float, metric: str, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if _is_fraction(metric):
        return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _pm(mean: float, se: float, metric: str, signed: bool = False) -> str:
    text = _fmt(mean, metric, signed)
    return text if not math.isfinite(se) else f"{text} ± {_fmt(se, metric)}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def table_rows(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    m, rm = table["metric"], table["report_metric"]
    unit = " (%)" if _is_fraction(rm) else ""
    head = ["#", "configuration", f"{m}{' (%)' if _is_fraction(m) else ''}", f"{rm}{unit}", "Δ vs baseline",
            "Δ vs previous", "p (paired t)", "epochs", "time/run", "seeds"]
    body = []
    for r in table["rows"]:
        vb, vp = r.get("vs_baseline"), r.get("vs_previous")
        body.append([
            str(r["index"]), r["label"], _pm(r["val_mean"], r["val_se"], m), _pm(r["report_mean"], r["report_se"], rm),
            _pm(vb["mean"], vb["se"], rm, True) if vb else "–",
            _pm(vp["mean"], vp["se"], rm, True) if vp else "–",
            _p(vp["p_t"]) if vp else "–",
            f"{r['epochs']:.1f}" if math.isfinite(r["epochs"]) else "–",
            f"{r['seconds']:.1f} s" if math.isfinite(r["seconds"]) else "–",
            f"{r['seeds']}" + (f" (x{r['group_size']} at once)" if r["group_size"] > 1 else ""),
        ])
    return head, body


def verdict_lines(table: dict[str, Any]) -> list[str]:
    v, rm = table["verdict"], table["report_metric"]
    pts = " points" if _is_fraction(rm) else ""
    lines = []
    if not v.get("largest_gain"):
        lines.append(f"**Largest gain:** none: no step improved {rm} on average.")
    else:
        g = v["largest_gain"]
        extra = f" ± {_fmt(g['se'], rm)}, p = {_p(g['p_t'])}" if "se" in g else " (mean over orders)"
        lines.append(f"**Largest gain:** {g['step']} ({_fmt(g['mean'], rm, True)}{pts} {rm}{extra}).")
    if v.get("significant_gains"):
        lines.append(f"**Helped (p < {ALPHA}):** {', '.join(v['significant_gains'])}.")
    if v.get("significant_losses"):
        lines.append(f"**Hurt (p < {ALPHA}):** {', '.join(v['significant_losses'])}.")
    if v.get("within_noise"):
        lines.append(f"**Within seed noise (not shown to differ, p ≥ {ALPHA}):** {', '.join(v['within_noise'])}.")
    if v.get("order_dependent") is not None:
        dep = v["order_dependent"]
        lines.append("**Order dependence:** " + (f"the sign of the gain of {', '.join(dep)} changes with the order."
                                                 if dep else "no step changes the sign of its gain across orders."))
    if v.get("final_vs_baseline"):
        d = v["final_vs_baseline"]
        lines.append(f"**{v['best_configuration']} vs baseline:** {_pm(d['mean'], d['se'], rm, True)}{pts} {rm} "
                     f"(paired over {d['n']} seeds, p = {_p(d['p_t'])}).")
    return lines


def _markdown_table(head: list[str], body: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(re.sub(r"(?<!\\)\|", r"\\|", c) for c in row) + " |" for row in body]
    return "\n".join(out)


def render(spec: StudySpec, store: Store, out: str | Path, notes: str = "") -> dict[str, Any]:
    """Write ``report.md``, ``report.html``, ``report.json`` and PNG plots into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(spec, store)
    pngs = _plots(spec, store, table, out)
    rm = table["report_metric"]
    names = {step.name for step in spec.steps} | {r[k] for r in table["rows"] for k in ("label", "added") if r.get(k)}
    shown = _names_escaped(table, names)  # user-written names escaped for Markdown; `table` stays as stored
    blocks: list[tuple] = [("h1", f"Study `{spec.name}`")]
    if spec.description:
        blocks.append(("p", md_text(spec.description, block=True)))
    blocks.append(("p", f"Mode: **{spec.mode}**, seeds {spec.seed_list} (paired across configurations). Runs select "
                        f"their best epoch on `{table['metric']}`; configurations are compared on `{rm}` (mean ± "
                        "standard error over seeds; Δ = paired per-seed difference, mean ± SE)."))
    blocks.append(("table", *table_rows(shown)))
    blocks.append(("h2", "Verdict"))
    blocks += [("li", line) for line in verdict_lines(shown)]
    if shown.get("orders"):
        blocks.append(("h2", "Gains by order"))
        blocks.append(("table", ["step", "mean gain", "min", "max", "gains per order"],
                       [[o["step"], _fmt(o["mean"], rm, True), _fmt(o["min"], rm, True), _fmt(o["max"], rm, True),
                         ", ".join(_fmt(g, rm, True) for g in o["gains"])] for o in shown["orders"]]))
    if notes:
        blocks.append(("p", notes))
    blocks.append(("h2", "Plots"))
    blocks += [("img", title, path) for title, path in pngs]
    blocks.append(("h2", "Configurations"))
    configs = {p.key: p.config for p in plan(spec)}
    for r in table["rows"]:
        what = describe(configs[r["key"]], configs[table["rows"][0]["key"]])
        blocks.append(("li", f"**{md_text(r['label'])}** (`{r['key']}`): {md_text(what)}"))
    (out / "report.md").write_text(_to_markdown(blocks))
    (out / "report.html").write_text(_to_html(blocks))
    (out / "report.json").write_text(json.dumps(table, indent=2, default=float))
    return table


def describe(config: Any, baseline: Any = None) -> str:
    """The resolved techniques of a configuration, with the knobs that differ from their defaults,
    and the settings (epochs, batch size, model options, ...) in which it differs from ``baseline``."""
    parts = []
    for t in resolve_techniques(config.techniques):
        knobs = ", ".join(f"{k}={v}" for k, v in t.knobs.model_dump(exclude_defaults=True).items())
        parts.append(f"{t.name}({knobs})")
    if baseline is not None:
        mine, base = config.model_dump(exclude={"techniques"}), baseline.model_dump(exclude={"techniques"})
        parts += [f"{k}={v}" for k, v in mine.items() if v != base[k]]
    return ", ".join(parts)


def _to_markdown(blocks: list[tuple]) -> str:
    lines: list[str] = []
    for kind, *rest in blocks:
        if kind == "h1":
            lines += [f"# {rest[0]}", ""]
        elif kind == "h2":
            lines += ["", f"## {rest[0]}", ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "li":
            lines.append(f"- {rest[0]}")
        elif kind == "table":
            lines += [_markdown_table(rest[0], rest[1]), ""]
        elif kind == "img":
            lines.append(f"![{rest[0]}]({rest[1].name})")
    return "\n".join(lines) + "\n"


def _to_html(blocks: list[tuple]) -> str:
    def inline(text: str) -> str:
        """The Markdown of the blocks as HTML: backslash escapes kept as literal characters, then
        ``**bold**`` and ```code```, everything else HTML-escaped."""
        escaped: list[str] = []

        def hold(m: re.Match) -> str:
            escaped.append(m.group(1))
            return f"\x00{len(escaped) - 1}\x00"

        text = html.escape(re.sub(r"\\([!-/:-@\[-`{-~])", hold, text.replace("\x00", "")), quote=False)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
        return re.sub("\x00(\\d+)\x00", lambda m: html.escape(escaped[int(m.group(1))]), text)

    title = re.sub(r"[`*]", "", blocks[0][1])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "td:nth-child(2),th:nth-child(2){text-align:left}th{background:#f3f3f3}img{max-width:100%}"
             "</style></head><body>"]
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "p"):
            tag = {"h1": "h1", "h2": "h2", "p": "p"}[kind]
            parts.append(f"<{tag}>{inline(rest[0])}</{tag}>")
        elif kind == "li":
            parts.append(f"<p>&bull; {inline(rest[0])}</p>")
        elif kind == "table":
            head, body = rest
            parts.append("<table><tr>" + "".join(f"<th>{inline(h)}</th>" for h in head) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in body]
            parts.append("</table>")
        elif kind == "img":
            data = base64.b64encode(rest[1].read_bytes()).decode()
            parts.append(f"<h3>{html.escape(rest[0])}</h3><img alt='{html.escape(rest[0])}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _plots(spec: StudySpec, store: Store, table: dict[str, Any], out: Path) -> list[tuple[str, Path]]:
    plt = plots.plt
    rows = [r for r in table["rows"] if r["seeds"]]
    if not rows:
        return []
    pngs = []
    rm = table["report_metric"]
    scale = 100 if _is_fraction(rm) else 1
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4))
    for i, r in enumerate(rows):
        ax.errorbar([i], [scale * r["report_mean"]], yerr=[scale * (r["report_se"] if math.isfinite(r["report_se"]) else 0)],
                    fmt="o", color="C0", capsize=4, ms=7)
        ax.scatter([i] * len(r["per_seed"]), [scale * v for v in r["per_seed"].values()], color="C1", s=12, zorder=3)
    ax.set_xticks(range(len(rows)), [plot_text(r["label"]) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(plot_text(rm + (" (%)" if scale == 100 else "")))
    ax.set_title(plot_text(f"{spec.name}: {rm} per configuration (mean ± SE; dots: seeds)"))
    fig.tight_layout()
    path = out / "configurations.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    pngs.append(("Report metric per configuration", path))

    runs = {(r.config_key, r.seed): r for r in store.runs(spec.name)}
    first, last = rows[0], _final_row(table)
    pair = [first] + ([last] if last is not first else [])
    histories = {plot_text(r["label"]): [runs[(r["key"], s)].history for s in r["per_seed"] if (r["key"], s) in runs] for r in pair}
    pngs.append(("Learning curves: baseline vs final", plots.learning_curves(histories, table["metric"], out / "learning_curves.png")))
    trajectories = {plot_text(r["label"]): [runs[(r["key"], s)].trajectory for s in r["per_seed"] if (r["key"], s) in runs] for r in pair}
    if any(t for ts in trajectories.values() for t in ts):
        pngs.append(("Trajectories: parameter and gradient norms per iteration",
                     plots.trajectories(trajectories, out / "trajectories.png")))
    return pngs


def _final_row(table: dict[str, Any]) -> dict[str, Any]:
    rows = [r for r in table["rows"] if r["seeds"]]
    if table["mode"] == "incremental":
        return rows[-1]
    if table["mode"] == "leave-one-out":
        return next((r for r in rows if r["label"] == "all steps"), rows[-1])
    sign = 1 if table["maximize"] else -1
    return max(rows, key=lambda r: sign * r["report_mean"])
