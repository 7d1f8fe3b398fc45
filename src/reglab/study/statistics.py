"""Paired statistics for multi-seed ablation studies.

A study trains configurations A, B, ... on the same seeds; seed s of A and seed s of B share the
data split, the initialisation and the data order, so a comparison of A with B is *paired by seed*
and is computed from the per-seed differences ``d_s = a_s - b_s``. ``d`` is always A minus B in the
metric's own units; A is *better* on seed s when ``d_s > 0`` for a higher-is-better metric and when
``d_s < 0`` for a lower-is-better one (``gain`` is the mean difference signed so that > 0 is better).

Per comparison (:func:`compare`, a :class:`Comparison`):

* ``n``, ``mean``, ``se``: paired seeds, mean of ``d``, ``std(d, ddof=1) / sqrt(n)``.
* ``ci_t``: the t confidence interval of the mean difference (``scipy.stats.ttest_1samp`` on ``d``,
  identical to ``scipy.stats.ttest_rel(a, b)``); ``p_t`` its two-sided p-value.
* ``ci_boot``: a BCa bootstrap interval of the mean difference (``scipy.stats.bootstrap``, 9999
  resamples of the seeds, ``numpy.random.default_rng(seed)`` so it is reproducible), for n >= 5.
  BCa (Efron 1987) corrects the percentile interval's bias and skew. It is a check on ``ci_t``, whose
  normality assumption it does not need, not a replacement: with 5-10 seeds both under-cover a bit.
* ``p_better``, ``p_better_ci``: the probability of improvement P(A > B) (Bouthillier et al. 2021;
  Agarwal et al. 2021): the fraction of paired seeds on which A is better, a tie counting 1/2, with
  a Wilson score interval (``statsmodels`` ``proportion_confint(method="wilson")``, which accepts the
  half counts of ties). Wilson rather than a bootstrap over seeds: with few seeds the bootstrap of a
  proportion collapses (all seeds won gives [1, 1]), whereas Wilson keeps honest width (3 of 3 won
  gives [0.44, 1]) and has near-nominal coverage for small n. ``meaningful`` is Bouthillier et al.'s
  rule: P(A > B) > 0.75 with the interval's lower bound > 0.5. It is a descriptive flag; the verdict
  is the Holm-controlled test.
* ``p_wilcoxon``: Wilcoxon's signed-rank test (``scipy.stats.wilcoxon``), a secondary column, n >= 6.
* ``power_n``: seeds a paired t-test needs to detect a difference ``delta`` with 80 % power at
  two-sided ``alpha``, from the observed SD of ``d`` (``statsmodels`` ``TTestPower``); a planning
  hint, with ``delta`` the observed ``|mean|`` unless given.

Undefined values are NaN (``None`` after :func:`jsonable`), never an exception: ``mean`` needs
n >= 1, ``se``/``ci_t``/``p_t`` n >= 2 and a non-zero variance of ``d`` (with every difference
equal the t statistic is x/0: scipy would say p = 0, which a constant difference on a coarse metric
does not justify), ``ci_boot`` n >= 5 and not all ``d`` equal (BCa's acceleration is then 0/0),
``p_wilcoxon`` n >= 6 and some ``d != 0``, ``power_n`` (None) a finite SD > 0. A pair with a
non-finite value on either side (a diverged or missing run) is dropped before anything else.

Family-wise control (:func:`holm`, :func:`verdict`): a study makes several comparisons; Holm's
step-down adjustment (Holm 1979, ``statsmodels`` ``multipletests(method="holm")``) keeps the
probability of *any* false "helped"/"hurt" at or below ``alpha`` under any dependence between the
comparisons. NaN p-values are left out of the family and stay NaN.

Sequential seeds (:func:`decide`): a study may add seeds in batches and look at planned sizes
``n_1 < ... < n_K`` (e.g. 3, 5, 7, 9, 11), stopping a comparison once it is decided. Testing at
``alpha`` at every look inflates false positives (with those 5 looks and normal null differences,
a simulation gives about 0.15 for a single comparison; the rule below about 0.035); instead alpha is split over the K planned looks (Bonferroni): the look-adjusted p-value
of a comparison is ``p_adj = min(1, K * min_k p_k)`` over the looks reached so far, where ``p_k`` is
the paired t-test on the first ``n_k`` seeds (a fixed-size test). Validity under any stopping rule:
let ``p*`` be ``p_adj`` with all K looks taken. By the union bound,
``P(p* <= u) <= sum_k P(p_k <= u / K) = u`` under the null, whatever the dependence between looks,
so ``p*`` is a valid p-value; a stopped comparison has seen a subset of the looks, so its
``p_adj >= p*``. Holm is monotone (smaller p-values never undo a rejection), so everything rejected
at any time by Holm on the current ``p_adj`` is rejected by Holm on the valid ``p*``, whose FWER is
<= alpha. Hence P(any false decision | null) <= alpha whenever and however seeds stop being added,
provided the looks (and K) are fixed in advance and seeds enter in increasing order. The precision
rule (stop when the t-interval's half-width <= a target) is just one more stopping rule and is
covered by the same argument.

References: X. Bouthillier et al. 2021, "Accounting for Variance in Machine Learning Benchmarks",
MLSys (arXiv:2103.03098); R. Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the
Statistical Precipice", NeurIPS; S. Holm 1979, "A simple sequentially rejective multiple test
procedure", Scandinavian Journal of Statistics 6:65-70; E. B. Wilson 1927, "Probable inference, the
law of succession, and statistical inference", JASA; B. Efron 1987, "Better bootstrap confidence
intervals", JASA.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Union

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.proportion import proportion_confint

from ..config import jsonable

NAN = math.nan
Values = Union[Mapping[Any, float], Sequence[float]]
"""Per-seed metric values: a mapping seed -> value (paired by seed) or a sequence (paired by position)."""


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error ``std(ddof=1) / sqrt(n)`` of ``values`` (NaN where undefined: no
    values for the mean, fewer than two for the SE)."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.nan


def paired_differences(a: Values, b: Values) -> np.ndarray:
    """``a_s - b_s`` over the seeds both have (mappings: common keys, in increasing seed order;
    sequences: by position, equal lengths), dropping pairs with a non-finite value on either side."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        seeds = sorted(set(a) & set(b))
        x, y = np.array([a[s] for s in seeds], float), np.array([b[s] for s in seeds], float)
    elif isinstance(a, Mapping) or isinstance(b, Mapping):
        raise TypeError("pair a mapping with a mapping (by seed) or a sequence with a sequence")
    else:
        x, y = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
        if x.shape != y.shape:
            raise ValueError(f"unpaired sequences: {len(x)} and {len(y)} values")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok] - y[ok]


def _constant(d: np.ndarray) -> bool:
    return bool(np.all(d == d[0]))


def t_test(d: Sequence[float], confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Two-sided paired t-test p-value and t confidence interval of the mean of ``d``; NaN when
    n < 2 or all differences are equal."""
    d = np.asarray(d, float)
    if len(d) < 2 or _constant(d):
        return NAN, (NAN, NAN)
    r = stats.ttest_1samp(d, 0.0)
    ci = r.confidence_interval(confidence)
    return float(r.pvalue), (float(ci.low), float(ci.high))


def bootstrap_ci(d: Sequence[float], confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of ``d`` (9999 resamples, seeded); NaN when n < 5, when
    all differences are equal, or when scipy finds the BCa interval degenerate."""
    d = np.asarray(d, float)
    if len(d) < 5 or _constant(d):
        return NAN, NAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate-data warnings: scipy then returns NaN
        ci = stats.bootstrap((d,), np.mean, confidence_level=confidence, method="BCa",
                             n_resamples=9999, rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def prob_improvement(d: Sequence[float], higher_is_better: bool = True,
                     confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """P(A > B): the fraction of paired seeds on which A is better (ties count 1/2) and its Wilson
    interval; NaN for no seeds."""
    d = np.asarray(d, float)
    if len(d) == 0:
        return NAN, (NAN, NAN)
    wins = np.sum(d > 0) if higher_is_better else np.sum(d < 0)
    k = float(wins + 0.5 * np.sum(d == 0))
    low, high = proportion_confint(k, len(d), alpha=1 - confidence, method="wilson")
    return k / len(d), (float(low), float(high))


def meaningful_improvement(p_better: float, ci_low: float, threshold: float = 0.75) -> bool:
    """Bouthillier et al.'s rule: P(A > B) > ``threshold`` and the interval's lower bound > 0.5."""
    return bool(p_better > threshold and ci_low > 0.5)  # False for NaN


def seeds_needed(sd: float, delta: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Paired seeds for a two-sided paired t-test at ``alpha`` to detect a mean difference ``delta``
    with ``power``, given the SD of the differences; None when sd or delta is 0 or not finite."""
    if not (math.isfinite(sd) and sd > 0 and math.isfinite(delta) and delta != 0):
        return None
    es, tp = abs(delta) / sd, TTestPower()
    if tp.power(effect_size=es, nobs=2, alpha=alpha) >= power:
        return 2  # the solver does not converge for huge effects; 2 is a paired t-test's minimum
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = float(tp.solve_power(effect_size=es, alpha=alpha, power=power))
    return math.ceil(n - 1e-9) if math.isfinite(n) else None


@dataclass(frozen=True)
class Comparison:
    """One paired comparison A vs B; see the module docstring for each field."""
    name: str
    higher_is_better: bool
    n: int
    mean: float
    se: float
    ci_t: tuple[float, float]
    ci_boot: tuple[float, float]
    p_better: float
    p_better_ci: tuple[float, float]
    meaningful: bool
    p_t: float
    p_wilcoxon: float
    power_n: int | None

    @property
    def gain(self) -> float:
        """The mean difference signed so that > 0 means A is better."""
        return self.mean if self.higher_is_better else -self.mean

    def to_json(self) -> dict[str, Any]:
        return jsonable({**asdict(self), "gain": self.gain})


def compare(a: Values, b: Values, *, name: str = "", higher_is_better: bool = True,
            confidence: float = 0.95, seed: int = 0, delta: float | None = None) -> Comparison:
    """All per-comparison statistics of A (``a``) against B (``b``), paired by seed."""
    d = paired_differences(a, b)
    n = len(d)
    sd = float(d.std(ddof=1)) if n >= 2 else NAN
    mean = float(d.mean()) if n else NAN
    p_t, ci_t = t_test(d, confidence)
    p_better, p_better_ci = prob_improvement(d, higher_is_better, confidence)
    p_w = NAN
    if n >= 6 and np.any(d != 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_w = float(stats.wilcoxon(d).pvalue)
    return Comparison(name, higher_is_better, n, mean, sd / math.sqrt(n) if n >= 2 else NAN, ci_t,
                      bootstrap_ci(d, confidence, seed), p_better, p_better_ci,
                      meaningful_improvement(p_better, p_better_ci[0]), p_t, p_w,
                      seeds_needed(sd, abs(mean) if delta is None else delta, 1 - confidence))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (``multipletests(method="holm")``); NaN entries are left out of the
    family and stay NaN."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, NAN)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out.tolist()


def _label(gain: float, p_adjusted: float, alpha: float) -> str:
    if not p_adjusted < alpha:  # NaN too
        return "not shown"
    return "helped" if gain > 0 else "hurt"


def verdict(comparisons: Sequence[Comparison], alpha: float = 0.05,
            p_adjusted: Sequence[float] | None = None) -> dict[str, Any]:
    """"helped"/"hurt" per comparison (by name) only where its Holm-adjusted p-value < ``alpha``,
    else "not shown"; ``p_adjusted`` defaults to Holm over the comparisons' ``p_t`` (pass
    :func:`decide`'s ``p_holm`` in a sequential study). ``largest``: the comparison with the largest
    gain, its mean difference and t interval, for the "no step was shown to help" sentence."""
    p = holm([c.p_t for c in comparisons]) if p_adjusted is None else [float(q) for q in p_adjusted]
    labels = {c.name: _label(c.gain, q, alpha) for c, q in zip(comparisons, p)}
    finite = [(c, q) for c, q in zip(comparisons, p) if math.isfinite(c.gain)]
    best = max(finite, key=lambda cq: cq[0].gain, default=None)
    largest = None if best is None else {"name": best[0].name, "mean": best[0].mean, "gain": best[0].gain,
                                         "ci_t": best[0].ci_t, "p_holm": best[1]}
    return {"labels": labels, "p_holm": {c.name: q for c, q in zip(comparisons, p)},
            "helped": [k for k, v in labels.items() if v == "helped"], "largest": largest}


def planned_looks(first: int = 3, step: int = 2, last: int = 11) -> tuple[int, ...]:
    """Seed counts at which a sequential study looks: ``first, first + step, ...``, ending at ``last``."""
    if not 2 <= first <= last or step < 1:
        raise ValueError("need 2 <= first <= last and step >= 1")
    looks = tuple(range(first, last + 1, step))
    return looks if looks[-1] == last else looks + (last,)


def look_pvalues(d: Any, looks: Sequence[int]) -> np.ndarray:
    """``p[..., k]``: the two-sided paired t-test on the first ``looks[k]`` differences along the last
    axis of ``d`` (vectorised over leading axes); NaN for looks beyond the data or with all
    differences equal."""
    d = np.asarray(d, float)
    out = np.full(d.shape[:-1] + (len(looks),), NAN)
    for k, m in enumerate(looks):
        if 2 <= m <= d.shape[-1]:
            x = d[..., :m]
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                p = stats.ttest_1samp(x, 0.0, axis=-1).pvalue
            out[..., k] = np.where(np.ptp(x, axis=-1) > 0, p, NAN)
    return out


def look_adjusted(p_looks: Any) -> np.ndarray:
    """Bonferroni over the K planned looks (the last axis): ``min(1, K * min_k p_k)`` over the looks
    with a p-value; NaN where there is none."""
    p = np.asarray(p_looks, float)
    finite = np.isfinite(p)
    low = np.where(finite, p, np.inf).min(axis=-1)
    return np.where(finite.any(axis=-1), np.minimum(1.0, p.shape[-1] * low), NAN)


@dataclass(frozen=True)
class LookStatus:
    """Where one comparison stands after a look. ``state``: "helped"/"hurt" (decided: Holm over the
    look-adjusted p-values < alpha), "precise" (not decided, t half-width <= target: stop adding
    seeds), "not shown" (not decided, the last planned look reached) or "undecided" (needs more)."""
    name: str
    n: int
    looks_reached: int
    p_min: float  # smallest per-look p-value so far
    p_adj: float  # min(1, K * p_min)
    p_holm: float  # Holm over the family's p_adj
    mean: float
    halfwidth: float
    state: str
    at_max: bool
    needs_more_seeds: bool

    def to_json(self) -> dict[str, Any]:
        return jsonable(asdict(self))


def decide(comparisons: Mapping[str, tuple[Values, Values]], looks: Sequence[int], *,
           higher_is_better: bool = True, alpha: float = 0.05,
           target_halfwidth: float | None = None, confidence: float = 0.95) -> dict[str, LookStatus]:
    """After a look: the state of each comparison ``name -> (a, b)`` given all paired values so far.
    ``looks`` are the planned seed counts, fixed in advance; seeds must enter in increasing order
    (look k tests the ``looks[k]`` smallest seeds). The family is all of ``comparisons``: keep passing
    those stopped earlier, with their final values. A decision never reverts at a later look: each
    ``p_adj`` can only fall as looks are added, and Holm is monotone."""
    looks = [int(m) for m in looks]
    if not looks or looks[0] < 2 or any(x >= y for x, y in zip(looks, looks[1:])):
        raise ValueError("looks must be increasing seed counts, the first >= 2")
    rows = []
    for name, (a, b) in comparisons.items():
        d = paired_differences(a, b)
        p = look_pvalues(d, looks) if len(d) else np.full(len(looks), NAN)
        k = int(np.nanargmin(p)) if np.isfinite(p).any() else None
        gain = NAN if k is None else float(d[:looks[k]].mean()) * (1 if higher_is_better else -1)
        ci = t_test(d, confidence)[1]
        rows.append((name, d, p, float(look_adjusted(p)), gain, (ci[1] - ci[0]) / 2))
    p_holm = holm([r[3] for r in rows])
    out = {}
    for (name, d, p, p_adj, gain, half), q in zip(rows, p_holm):
        at_max = len(d) >= looks[-1]
        state = _label(gain, q, alpha)
        if state == "not shown":
            state = ("precise" if target_halfwidth is not None and half <= target_halfwidth
                     else "not shown" if at_max else "undecided")
        out[name] = LookStatus(name, len(d), sum(m <= len(d) for m in looks),
                               float(np.nanmin(p)) if np.isfinite(p).any() else NAN, p_adj, q,
                               float(d.mean()) if len(d) else NAN, half, state, at_max,
                               state == "undecided")
    return out
