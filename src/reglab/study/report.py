"""The study report: one table, the comparisons a study's mode defines, a verdict, plots; Markdown,
self-contained HTML and strict JSON.

Per configuration: the validation metric at each run's best epoch (the epoch selected on it) and
the report metric (by default the validation metric's test twin) of the same weights, mean ± SE over
the seeds that did not diverge, beside the last epoch's report metric; the epochs trained, the seeds.

Per comparison (incremental: each step against the configuration before it; isolated: each step
against the baseline; leave-one-out: all steps against the baseline, and each step as all steps
against all steps but it; orders: each step where it is added along each order; every mode: the
final configuration against the baseline), paired by seed (:mod:`.statistics`): the mean difference
A - B with its 95% t interval and a BCa bootstrap interval (from 5 seeds), the probability of
improvement P(A > B) over seeds (Bouthillier et al. 2021) with its Wilson interval, the paired
t-test's p-value, the p-value under Holm's family-wise control over all of the study's comparisons
(with adaptive seeds: Holm over the Bonferroni-over-looks p-values, valid under optional stopping),
and the seeds a paired t-test would need for 80% power at the observed difference (and at the
study's ``min_effect``). The verdict says "helped" / "hurt" only where the Holm-controlled p-value is
below 0.05; otherwise the step is "not shown" to differ (which is not "shown equal").

The best configuration is chosen on the validation metric, never on the test split. Everything is
computed from the results store alone (``reglab report`` re-renders it); ``report.json`` holds no
timings (``timing.json`` does), so the same study gives the same ``report.json`` on every run.
"""
from __future__ import annotations

import base64
import html
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..analysis import plots
from ..config import dumps
from ..metrics import metric_maximized, on_split, recorded_default
from ..techniques import resolve_techniques
from . import statistics as st
from .plan import Planned, order_paths, plan
from .spec import StudySpec
from .store import Store, StoredRun
from .tune import Tuned, tune

ALPHA = 0.05


def _metrics(spec: StudySpec, runs: list[StoredRun]) -> tuple[str, str]:
    keys = set().union(*(r.metrics for r in runs)) if runs else set()
    metric = spec.metric or recorded_default(keys)
    report_metric = spec.report_metric or on_split(metric, "test")
    return metric, report_metric


def _comparisons(spec: StudySpec, planned: list[Planned]) -> list[tuple[str, str, str]]:
    """(name, key of A, key of B) of every comparison the study's mode defines, A - B measuring the
    named step's effect (duplicates merged)."""
    base = planned[0].key
    out: list[tuple[str, str, str]] = []
    if spec.mode == "orders":
        for k, path in enumerate(order_paths(spec)):
            out += [(f"{step} (order {k + 1})", after, before) for step, before, after in path]
    elif spec.mode == "leave-one-out":
        full = next(p for p in planned if p.label == "all steps")
        out.append(("all steps", full.key, base))
        out += [(p.added.removeprefix("- "), full.key, p.key) for p in planned if p.compare_to == full.key]
    else:
        out += [(p.added, p.key, p.compare_to) for p in planned if p.compare_to is not None]
    final = planned[-1] if spec.mode in ("incremental", "orders") else None
    if final is not None and final.compare_to != base and final.key != base:
        out.append((f"{final.label} vs baseline", final.key, base))
    seen, unique = set(), []
    for name, a, b in out:
        if (a, b) not in seen:
            seen.add((a, b))
            unique.append((name, a, b))
    return unique


def build_table(spec: StudySpec, store: Store) -> dict[str, Any]:
    """The report's numbers as plain data (what ``report.json`` and ``--json`` hold). Searched knobs
    are reported at the values their tuning chose (read from the store)."""
    spec, tuned = tune(spec, store)
    planned = plan(spec)
    runs = store.runs({p.key for p in planned})
    metric, report_metric = _metrics(spec, runs)
    maximize = metric_maximized(report_metric)
    by_key: dict[str, dict[int, StoredRun]] = defaultdict(dict)
    for r in runs:
        if r.seed in spec.seed_list:
            by_key[r.config_key][r.seed] = r

    def values(key: str, name: str) -> dict[int, float]:
        """Per seed (diverged seeds left out) the metric ``name`` of configuration ``key``."""
        return {s: r.metrics.get(name, math.nan) for s, r in sorted(by_key.get(key, {}).items()) if not r.diverged}

    rows = []
    for i, p in enumerate(planned):
        seeds = by_key.get(p.key, {})
        val_m, val_se = st.mean_se(list(values(p.key, metric).values()))
        rep_m, rep_se = st.mean_se(list(values(p.key, report_metric).values()))
        last_m, last_se = st.mean_se(list(values(p.key, "last_" + report_metric).values()))
        kept = [r for r in seeds.values() if not r.diverged]
        rows.append({
            "index": i, "label": p.label, "key": p.key, "added": p.added, "steps": p.steps,
            "seeds": len(seeds), "diverged": sum(r.diverged for r in seeds.values()),
            "val_mean": val_m, "val_se": val_se, "report_mean": rep_m, "report_se": rep_se,
            "last_report_mean": last_m, "last_report_se": last_se,
            "per_seed": {s: seeds[s].metrics.get(report_metric) if not seeds[s].diverged else None for s in sorted(seeds)},
            "best_epoch": st.mean_se([r.metrics.get("best_epoch", math.nan) for r in kept])[0],
            "epochs": st.mean_se([r.metrics.get("epochs", math.nan) for r in kept])[0],
            "stacked": any((r.group_size or 1) > 1 for r in seeds.values()) if seeds else None,
            "threads": sorted({r.threads for r in seeds.values() if r.threads}),
        })
    looks = spec.looks
    comparisons = []
    for name, a, b in _comparisons(spec, planned):
        c = st.compare(values(a, report_metric), values(b, report_metric), name=name, higher_is_better=maximize,
                       delta=spec.min_effect)
        comparisons.append((c, a, b))
    status = st.decide({c.name: (values(a, report_metric), values(b, report_metric)) for c, a, b in comparisons},
                       looks, higher_is_better=maximize, alpha=ALPHA, target_halfwidth=spec.target_halfwidth)
    labels = {r["key"]: r["label"] for r in rows}
    table_comparisons = []
    for c, a, b in comparisons:
        look = status[c.name]
        observed = st.seeds_needed(c.se * math.sqrt(c.n) if c.n >= 2 else math.nan, abs(c.mean))
        table_comparisons.append({
            "name": c.name, "a": labels[a], "b": labels[b], "a_key": a, "b_key": b, "n": c.n, "mean": c.mean,
            "gain": c.gain, "se": c.se, "ci_t": c.ci_t, "ci_boot": c.ci_boot, "p_better": c.p_better,
            "p_better_ci": c.p_better_ci, "meaningful": c.meaningful, "p_t": c.p_t, "p_wilcoxon": c.p_wilcoxon,
            "p_looks": look.p_adj, "p_holm": look.p_holm, "state": look.state, "halfwidth": look.halfwidth,
            "power_seeds_observed": observed, "power_seeds_min_effect": c.power_n if spec.min_effect else None,
        })
    best = _best(rows, metric_maximized(metric))
    varied = ["initialization", "data order", "augmentation, dropout and noise draws"]
    if any(p.config.vary_split for p in planned):
        varied.append("train/validation split")
    table = {"study": spec.name, "mode": spec.mode, "metric": metric, "report_metric": report_metric,
             "maximize": maximize, "seeds": spec.seed_list, "varied_with_the_seed": varied,
             "looks": list(looks), "alpha": ALPHA,
             "correction": "holm" if len(looks) == 1 else "holm over bonferroni-over-looks",
             "rows": rows, "comparisons": table_comparisons, "best_configuration": best,
             "runs": {"finished": len(runs), "last_invocation": store.last_invocation()}}
    table["tuning"] = [_tuning(t, spec) for t in tuned]
    table["verdict"] = verdict(table)
    return table


def _tuning(t: Tuned, spec: StudySpec) -> dict[str, Any]:
    """A tuned layer as data: each trial's validation metric (mean ± SE over the tuning seeds) and
    the chosen values."""
    trials = []
    for trial in t.trials:
        m, se = st.mean_se(list(trial.val.values()))
        trials.append({"values": trial.values, "key": trial.key, "seeds": len(trial.val), "val_mean": m, "val_se": se})
    return {"layer": t.label, "knobs": [k.id for k in t.knobs], "trials": trials, "runs": sum(x["seeds"] for x in trials),
            "chosen": None if t.chosen is None else {k.id: v for k, v in t.chosen.items()},
            "tune_seeds": spec.tune_seed_list, "selected_on": spec.metric}


def _best(rows: list[dict[str, Any]], maximize_val: bool) -> dict[str, Any] | None:
    """The configuration with the best mean *validation* metric (the test split selects nothing)."""
    scored = [r for r in rows if math.isfinite(r["val_mean"])]
    if not scored:
        return None
    best = max(scored, key=lambda r: r["val_mean"] if maximize_val else -r["val_mean"])
    return {"label": best["label"], "key": best["key"], "val_mean": best["val_mean"], "report_mean": best["report_mean"],
            "report_se": best["report_se"], "chosen_on": "validation"}


def verdict(table: dict[str, Any]) -> dict[str, Any]:
    """Helped / hurt only where the Holm-controlled p-value < alpha; the largest observed gain with
    its interval whatever its significance; order dependence in mode orders."""
    comps = table["comparisons"]
    out: dict[str, Any] = {
        "helped": [c["name"] for c in comps if c["state"] == "helped"],
        "hurt": [c["name"] for c in comps if c["state"] == "hurt"],
        "not_shown": [c["name"] for c in comps if c["state"] not in ("helped", "hurt")],
        "largest_gain": None,
    }
    finite = [c for c in comps if c["gain"] is not None and math.isfinite(c["gain"])]
    if finite:
        top = max(finite, key=lambda c: c["gain"])
        out["largest_gain"] = {k: top[k] for k in ("name", "mean", "gain", "ci_t", "p_holm", "state")}
    if table["mode"] == "orders":
        gains: dict[str, list[float]] = defaultdict(list)
        for c in comps:
            if " (order " in c["name"]:
                gains[c["name"].split(" (order ")[0]].append(c["gain"])
        out["order_dependent"] = sorted(step for step, g in gains.items()
                                        if any(x > 0 for x in g) and any(x < 0 for x in g))
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


def _fmt(value: float | None, metric: str, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if _is_fraction(metric):
        return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _pm(mean: float, se: float, metric: str, signed: bool = False) -> str:
    text = _fmt(mean, metric, signed)
    return text if se is None or not math.isfinite(se) else f"{text} ± {_fmt(se, metric)}"


def _ci(ci: Any, metric: str) -> str:
    lo, hi = ci
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "–"
    return f"[{_fmt(lo, metric, True)}, {_fmt(hi, metric, True)}]"


def _p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def table_rows(table: dict[str, Any], timing: dict[str, float]) -> tuple[list[str], list[list[str]]]:
    m, rm = table["metric"], table["report_metric"]
    unit = " (%)" if _is_fraction(rm) else ""
    head = ["#", "configuration", f"{m}, best epoch{' (%)' if _is_fraction(m) else ''}",
            f"{rm} at the best-{m} epoch{unit}", f"{rm}, last epoch{unit}", "seeds", "best epoch / trained", "time/run"]
    body = []
    for r in table["rows"]:
        seeds = f"{r['seeds'] - r['diverged']}" + (f" (+{r['diverged']} diverged, left out)" if r["diverged"] else "")
        seeds += " stacked" if r["stacked"] else " one by one" if r["stacked"] is False else ""
        secs = timing.get(r["key"], math.nan)
        body.append([
            str(r["index"]), r["label"], _pm(r["val_mean"], r["val_se"], m), _pm(r["report_mean"], r["report_se"], rm),
            _pm(r["last_report_mean"], r["last_report_se"], rm), seeds,
            f"{r['best_epoch']:.1f} / {r['epochs']:.1f}" if math.isfinite(r["epochs"]) else "–",
            f"{secs:.1f} s" if math.isfinite(secs) else "–",
        ])
    return head, body


def comparison_rows(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rm = table["report_metric"]
    pts = " (points)" if _is_fraction(rm) else ""
    head = ["comparison (A vs B)", f"Δ {rm} = A − B{pts}, 95% t CI", "95% bootstrap CI", "P(A better than B) [95% CI]",
            "p, paired t", f"p, {table['correction']}", "verdict", "seeds for 80% power at the observed Δ"]
    body = []
    for c in table["comparisons"]:
        pb = c["p_better"]
        pair = f"{c['a']} vs {c['b']}"
        body.append([
            f"{pair if c['name'] == pair else c['name'] + ': ' + pair} ({c['n']} seeds)", f"{_fmt(c['mean'], rm, True)} {_ci(c['ci_t'], rm)}",
            _ci(c["ci_boot"], rm),
            "–" if pb is None or not math.isfinite(pb) else f"{pb:.2f} [{c['p_better_ci'][0]:.2f}, {c['p_better_ci'][1]:.2f}]",
            _p(c["p_t"]), _p(c["p_holm"]), c["state"],
            str(c["power_seeds_observed"]) if c["power_seeds_observed"] else "–",
        ])
    return head, body


def tuning_rows(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    m = table["metric"]
    head = ["tuned", "knobs", "trials", "runs (trials x tuning seeds)", "chosen", f"{m} at the chosen values (mean ± SE)"]
    body = []
    for t in table["tuning"]:
        best = next((x for x in t["trials"] if t["chosen"] and x["values"] == t["chosen"]), None)
        body.append([t["layer"], ", ".join(k.rsplit(".", 1)[1] for k in t["knobs"]), str(len(t["trials"])), str(t["runs"]),
                     "not yet (trials missing)" if t["chosen"] is None else
                     ", ".join(f"{k.rsplit('.', 1)[1]}={_value(v)}" for k, v in t["chosen"].items()),
                     _pm(best["val_mean"], best["val_se"], m) if best else "–"])
    return head, body


def _value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def verdict_lines(table: dict[str, Any]) -> list[str]:
    v, rm = table["verdict"], table["report_metric"]
    pts = " points" if _is_fraction(rm) else ""
    control = f"p < {ALPHA} after {table['correction']} over the study's {len(table['comparisons'])} comparisons"
    lines = []
    if v["helped"]:
        lines.append(f"**Helped ({control}):** {', '.join(v['helped'])}.")
    else:
        g = v["largest_gain"]
        if g is None:
            lines.append("**No step was shown to help:** no comparison has paired seeds yet.")
        else:
            lines.append(f"**No step was shown to help** ({control}). The largest observed difference: {g['name']}, "
                         f"{_fmt(g['mean'], rm, True)}{pts} {rm}, 95% CI {_ci(g['ci_t'], rm)}, p = {_p(g['p_holm'])} "
                         f"after correction.")
    if v["hurt"]:
        lines.append(f"**Hurt ({control}):** {', '.join(v['hurt'])}.")
    if v["not_shown"]:
        lines.append(f"**Not shown to differ** (not the same as shown equal; more seeds narrow the intervals): "
                     f"{', '.join(v['not_shown'])}.")
    if v.get("order_dependent") is not None:
        dep = v["order_dependent"]
        lines.append("**Order dependence:** " + (f"the sign of the observed gain of {', '.join(dep)} changes with the order."
                                                 if dep else "no step changes the sign of its observed gain across orders."))
    b = table["best_configuration"]
    if b is not None:
        lines.append(f"**Best configuration on validation ({table['metric']}):** {b['label']}, "
                     f"{rm} {_pm(b['report_mean'], b['report_se'], rm)}{' %' if _is_fraction(rm) else ''}.")
    return lines


def _markdown_table(head: list[str], body: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(re.sub(r"(?<!\\)\|", r"\\|", c) for c in row) + " |" for row in body]
    return "\n".join(out)


def render(spec: StudySpec, store: Store, out: str | Path, notes: str = "") -> dict[str, Any]:
    """Write ``report.md``, ``report.html``, ``report.json``, ``timing.json`` and PNG plots into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(spec, store)
    planned_keys = {r["key"] for r in table["rows"]}
    timing = {}
    for key in planned_keys:
        secs = [r.seconds for r in store.runs({key}) if r.seconds is not None and r.seed in spec.seed_list]
        timing[key] = sum(secs) / len(secs) if secs else math.nan
    pngs = _plots(spec, store, table, out)
    rm = table["report_metric"]
    names = ({step.name for step in spec.steps} | {r[k] for r in table["rows"] for k in ("label", "added") if r.get(k)}
             | {c["name"] for c in table["comparisons"]} | {t["layer"] for t in table["tuning"]})
    shown = _names_escaped(table, names)  # user-written names escaped for Markdown; `table` stays as stored
    blocks: list[tuple] = [("h1", f"Study `{spec.name}`")]
    if spec.description:
        blocks.append(("p", md_text(spec.description, block=True)))
    inv = table["runs"]["last_invocation"]
    reuse = (f" The last `reglab study` found {inv['reused']} of {inv['planned']} runs finished and trained {inv['trained']}."
             if inv else "")
    split = ("" if "train/validation split" in table["varied_with_the_seed"]
             else "; the train/validation split is the same for every seed")
    seeds = (f"adaptive seeds: looks at {', '.join(map(str, spec.looks))} seeds" if spec.adaptive else f"seeds {spec.seed_list}")
    blocks.append(("p", f"Mode: **{spec.mode}**, {seeds}, paired across configurations. What varies with the seed: "
                        f"{', '.join(table['varied_with_the_seed'])}{split}; every random stream is separate per seed and "
                        "purpose. "
                        f"Each run's metrics are those of its best epoch, selected on `{table['metric']}` (validation); "
                        f"configurations are compared on `{rm}` of the same weights (mean ± standard error over seeds); "
                        f"the last epoch's `{rm}` is shown beside it. The test split selects nothing.{reuse}"))
    runs = store.invocations()
    if runs:
        total = sum(i["seconds"] for i in runs) / 60
        blocks.append(("p", f"Trained by {len(runs)} `reglab study` invocation(s), {total:.1f} min of wall time in all; "
                            f"the last on {runs[-1]['machine']} ({runs[-1]['seconds'] / 60:.1f} min)."))
    blocks.append(("table", *table_rows(shown, timing)))
    blocks.append(("h2", "Comparisons"))
    blocks.append(("table", *comparison_rows(shown)))
    blocks.append(("h2", "Verdict"))
    blocks += [("li", line) for line in verdict_lines(shown)]
    if table["tuning"]:
        blocks.append(("h2", "Tuned steps"))
        blocks.append(("p", f"Each searched knob was chosen on the mean `{table['metric']}` (validation, each run's best "
                            f"epoch) over the tuning seeds {table['tuning'][0]['tune_seeds']}, which are not the study's "
                            "seeds: the configurations above were trained at the chosen values on fresh seeds, so their "
                            "test numbers are not the best of many trials. The test split chose nothing."))
        blocks.append(("table", *tuning_rows(shown)))
    if notes:
        blocks.append(("p", notes))
    blocks.append(("h2", "Plots"))
    blocks += [("img", title, path) for title, path in pngs]
    blocks.append(("h2", "Configurations"))
    configs = {p.key: p.config for p in plan(tune(spec, store)[0])}
    decisions = store.decisions()
    for r in table["rows"]:
        how = (f"; seeds {'stacked' if r['stacked'] else 'one by one'} ({decisions[r['key']][1]})"
               if r["stacked"] is not None and r["key"] in decisions else "")
        threads = f"; {', '.join(map(str, r['threads']))} torch thread(s)" if r["threads"] else ""
        what = describe(configs[r["key"]], configs[table["rows"][0]["key"]])
        blocks.append(("li", f"**{md_text(r['label'])}** (`{r['key']}`): {md_text(what)}{md_text(how)}{threads}"))
    (out / "report.md").write_text(_to_markdown(blocks))
    (out / "report.html").write_text(_to_html(blocks))
    (out / "report.json").write_text(dumps(table, indent=2))
    (out / "timing.json").write_text(dumps({"seconds_per_run": {r["label"]: timing[r["key"]] for r in table["rows"]},
                                            "invocations": store.invocations()}, indent=2))
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
    unit = " (%)" if scale == 100 else ""
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4))
    seeds = sorted({s for r in rows for s, v in r["per_seed"].items() if v is not None})
    for s in seeds:  # one line per seed across configurations: the pairing the comparisons use
        xs = [i for i, r in enumerate(rows) if r["per_seed"].get(s) is not None]
        ax.plot(xs, [scale * rows[i]["per_seed"][s] for i in xs], "-", color="0.6", lw=0.8, alpha=0.7, zorder=1)
    for i, r in enumerate(rows):
        se = r["report_se"] if math.isfinite(r["report_se"]) else 0
        ax.errorbar([i], [scale * r["report_mean"]], yerr=[scale * se], fmt="o", color="C0", capsize=4, ms=7, zorder=3)
    ax.set_xticks(range(len(rows)), [plot_text(r["label"]) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(plot_text(rm + unit))
    ax.set_title(f"{rm} per configuration: mean ± SE; grey lines: the same seed across configurations")
    path = plots.save_figure(fig, out / "configurations.png")
    pngs.append(("Report metric per configuration, seeds paired", path))

    comps = [c for c in table["comparisons"] if c["mean"] is not None and math.isfinite(c["mean"])]
    if comps:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(comps) + 1.5))
        for j, c in enumerate(comps):
            lo, hi = c["ci_t"]
            color = {"helped": "C2", "hurt": "C3"}.get(c["state"], "C0")
            if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
                ax.plot([scale * lo, scale * hi], [j, j], "-", color=color, lw=2)
            ax.plot([scale * c["mean"]], [j], "o", color=color)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(comps)), [plot_text(c["name"]) for c in comps], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ {rm}{' (points)' if scale == 100 else ''}, A − B, with 95% t CI "
                      "(green: helped, red: hurt, after correction)")
        path = plots.save_figure(fig, out / "comparisons.png")
        pngs.append(("Each comparison's paired difference with its interval", path))

    for t in table["tuning"]:  # sensitivity of each tuned knob
        if len(t["knobs"]) != 1 or not t["trials"]:
            continue
        knob = t["knobs"][0]
        points = sorted((x["values"][knob], x["val_mean"], x["val_se"]) for x in t["trials"]
                        if isinstance(x["values"][knob], (int, float)) and x["val_mean"] == x["val_mean"])
        if not points:
            continue
        vscale = 100 if _is_fraction(table["metric"]) else 1
        fig, ax = plt.subplots(figsize=(6, 3.6))
        xs = [p[0] for p in points]
        ax.errorbar(xs, [vscale * p[1] for p in points], yerr=[vscale * (p[2] if p[2] == p[2] else 0) for p in points],
                    fmt="o-", capsize=3)
        if t["chosen"] is not None:
            ax.axvline(t["chosen"][knob], color="C2", ls="--", label=plot_text(f"chosen: {_value(t['chosen'][knob])}"))
            ax.legend(fontsize=8)
        if min(xs) > 0 and max(xs) / min(xs) >= 20:
            ax.set_xscale("log")
        name = knob.rsplit(".", 1)[1]
        ax.set_xlabel(plot_text(f"{t['layer']}: {name}"))
        ax.set_ylabel(f"{table['metric']}{' (%)' if vscale == 100 else ''}, mean ± SE over the tuning seeds")
        slug = re.sub(r"[^a-z0-9]+", "-", f"{t['layer']}-{name}".lower()).strip("-")
        path = plots.save_figure(fig, out / f"sensitivity-{slug}.png")
        pngs.append((f"Sensitivity of {t['layer']}: validation metric against {name}", path))

    runs = {(r.config_key, r.seed): r for r in store.runs({r["key"] for r in rows})}
    chosen = [rows[0]]
    best = table["best_configuration"]
    for r in (next((x for x in rows if best and x["key"] == best["key"]), None), rows[-1]):
        if r is not None and r not in chosen:
            chosen.append(r)
    histories = {plot_text(r["label"]): [runs[(r["key"], s)].history for s in r["per_seed"] if (r["key"], s) in runs]
                 for r in chosen}
    pngs.append(("Learning curves: baseline, the best configuration on validation, the final one",
                 plots.learning_curves(histories, table["metric"], out / "learning_curves.png")))
    trajectories = {plot_text(r["label"]): [runs[(r["key"], s)].trajectory for s in r["per_seed"] if (r["key"], s) in runs]
                    for r in chosen}
    if any(t for ts in trajectories.values() for t in ts):
        pngs.append(("Trajectories: parameter and gradient norms per iteration",
                     plots.trajectories(trajectories, out / "trajectories.png")))
    return pngs
