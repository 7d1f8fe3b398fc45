import json
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from reglab.study.statistics import (
    bootstrap_ci, compare, decide, holm, jsonable, look_adjusted, look_pvalues, paired_differences,
    planned_looks, prob_improvement, seeds_needed, verdict)

A = [0.812, 0.797, 0.830, 0.805, 0.821, 0.799, 0.816, 0.808]
B = [0.801, 0.799, 0.835, 0.790, 0.812, 0.809, 0.800, 0.811]
LOOKS = (3, 5, 7, 9, 11)


def strict_json(obj):
    return json.loads(json.dumps(jsonable(obj), allow_nan=False))


def test_compare_equals_scipy_and_statsmodels():
    c = compare(A, B, name="A-B", seed=7)
    d = np.subtract(A, B)
    r = stats.ttest_rel(A, B)
    ci = r.confidence_interval(0.95)
    assert c.n == 8 and c.mean == pytest.approx(d.mean())
    assert c.se == pytest.approx(d.std(ddof=1) / math.sqrt(8))
    assert c.p_t == pytest.approx(r.pvalue) and c.ci_t == pytest.approx((ci.low, ci.high))
    assert c.p_wilcoxon == pytest.approx(stats.wilcoxon(d).pvalue)
    boot = stats.bootstrap((d,), np.mean, method="BCa", rng=np.random.default_rng(7)).confidence_interval
    assert c.ci_boot == pytest.approx((boot.low, boot.high))
    assert c.ci_boot == compare(A, B, seed=7).ci_boot  # deterministic
    wins = int(np.sum(d > 0))  # no ties here, so Wilson matches scipy's binomial interval
    w = stats.binomtest(wins, 8).proportion_ci(method="wilson")
    assert c.p_better == wins / 8 and c.p_better_ci == pytest.approx((w.low, w.high))
    n = TTestPower().solve_power(effect_size=abs(d.mean()) / d.std(ddof=1), alpha=0.05, power=0.8)
    assert c.power_n == math.ceil(n)
    assert strict_json(c)["name"] == "A-B" and strict_json(c)["gain"] == pytest.approx(c.mean)


def test_pairs_by_seed_and_drops_non_finite():
    a = {2: 1.0, 0: 3.0, 1: 2.0, 5: 9.0, 3: math.nan}
    b = {0: 1.0, 1: 1.5, 2: 0.0, 3: 1.0, 4: 7.0}
    assert paired_differences(a, b).tolist() == [2.0, 0.5, 1.0]  # seeds 0, 1, 2
    assert compare(a, b).n == 3
    a, b = {100: 1.0, 3: 2.0, 64: 3.0, 7: 4.0, 9: 5.0}, {64: 0.0, 9: 0.0, 3: 0.0, 100: 0.0, 7: 0.0}
    assert paired_differences(a, b).tolist() == [2.0, 4.0, 5.0, 3.0, 1.0]  # seeds 3, 7, 9, 64, 100
    with pytest.raises(ValueError):
        paired_differences([1, 2], [1, 2, 3])


def test_prob_improvement_hand_worked_with_ties():
    d = [1.0, 0.0, -1.0, 2.0, 0.0]  # 2 wins, 2 ties, 1 loss
    p, (lo, hi) = prob_improvement(d)
    assert p == pytest.approx((2 + 0.5 * 2) / 5)  # 0.6
    z, k, n = stats.norm.ppf(0.975), 3.0, 5  # Wilson by hand
    centre, half = (k + z * z / 2) / (n + z * z), z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))
    assert prob_improvement(d, higher_is_better=False)[0] == pytest.approx((1 + 1) / 5)  # 0.4
    all_won = compare([3, 4, 5, 6, 7.5], [1, 2, 3, 4, 5])
    assert all_won.p_better == 1.0 and all_won.p_better_ci[0] > 0.5 and all_won.meaningful
    assert not compare([1, 2, 3.0], [0, 1, 2.1]).meaningful  # 3 of 3: lower bound 0.44


def test_lower_is_better_direction():
    loss_a, loss_b = [0.40, 0.42, 0.39, 0.41, 0.40, 0.38], [0.50, 0.53, 0.49, 0.52, 0.51, 0.50]
    c = compare(loss_a, loss_b, name="A", higher_is_better=False)
    assert c.mean < 0 and c.gain > 0 and c.p_better == 1.0
    assert verdict([c])["labels"] == {"A": "helped"}
    worse = compare(loss_b, loss_a, name="B", higher_is_better=False)
    assert worse.p_better == 0.0 and verdict([worse])["labels"] == {"B": "hurt"}


@pytest.mark.parametrize("a, b", [([], []), ([1.0], [0.5]), ([1.0, 2.0, 3.0], [0.5, 1.5, 2.5]),
                                  ([1.0] * 7, [1.0] * 7), ([1.0, math.nan, 2.0], [0.0, 1.0, math.inf])])
def test_degenerate_inputs_are_defined(a, b):
    c = compare(a, b)
    n = len(paired_differences(a, b))
    assert c.n == n
    assert math.isnan(c.p_t) and math.isnan(c.ci_t[0]) and math.isnan(c.ci_boot[0])  # n < 2 or zero variance
    assert math.isnan(c.se) == (n < 2) and math.isnan(c.mean) == (n == 0)
    assert c.power_n is None and math.isnan(c.p_better) == (n == 0)
    out = strict_json(c)
    assert out["p_t"] is None and out["ci_t"] == [None, None]


def test_zero_variance_details():
    c = compare([1.0] * 7, [0.0] * 7)  # a constant nonzero difference
    assert c.mean == 1.0 and c.se == 0.0 and math.isnan(c.p_t) and math.isnan(c.ci_boot[1])
    assert c.p_wilcoxon == pytest.approx(stats.wilcoxon([1.0] * 7).pvalue)  # all signs agree: defined
    assert c.p_better == 1.0
    assert math.isnan(compare([1.0] * 7, [1.0] * 7).p_wilcoxon)
    assert math.isnan(bootstrap_ci([1, 2, 3, 4])[0])  # n < 5


def test_holm_equals_multipletests_and_keeps_nan():
    p = [0.01, math.nan, 0.04, 0.03, 0.2]
    ref = multipletests([0.01, 0.04, 0.03, 0.2], method="holm")[1]
    out = holm(p)
    assert math.isnan(out[1]) and np.allclose([out[0], out[2], out[3], out[4]], ref)
    assert all(math.isnan(q) for q in holm([math.nan, math.nan]))


def test_seeds_needed_equals_ttestpower():
    for sd, delta in [(0.02, 0.01), (1.0, 0.5), (0.3, 0.4)]:
        n = TTestPower().solve_power(effect_size=delta / sd, alpha=0.05, power=0.8)
        assert seeds_needed(sd, delta) == math.ceil(n)
    assert seeds_needed(0.0, 0.1) is None and seeds_needed(math.nan, 0.1) is None
    assert seeds_needed(1.0, 0.0) is None
    assert seeds_needed(0.01, 5.0) == 2  # a huge effect: the solver's edge


def test_verdict_labels_and_largest():
    big = compare(A, [x - 0.05 for x in A], name="big")  # constant diff: p NaN -> not shown
    up = compare([x + 0.01 * (i % 3 + 1) for i, x in enumerate(A)], A, name="up")
    down = compare(B, [x + 0.02 + 0.001 * i for i, x in enumerate(B)], name="down")
    null = compare(A, B, name="null")
    v = verdict([big, up, down, null])
    assert v["labels"] == {"big": "not shown", "up": "helped", "down": "hurt", "null": "not shown"}
    assert v["p_holm"]["up"] == pytest.approx(holm([big.p_t, up.p_t, down.p_t, null.p_t])[1])
    assert v["largest"]["name"] == "big" and v["helped"] == ["up"]
    assert verdict([null])["largest"]["ci_t"] == null.ci_t
    strict_json(v)


def test_look_pvalues_equal_ttest_rel_on_prefixes():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 11)), rng.normal(size=(4, 11))
    p = look_pvalues(a - b, LOOKS)
    for i in range(4):
        for k, m in enumerate(LOOKS):
            assert p[i, k] == pytest.approx(stats.ttest_rel(a[i, :m], b[i, :m]).pvalue)
    assert np.isnan(look_pvalues((a - b)[0, :6], LOOKS)[2:]).all()  # looks not reached yet
    assert look_adjusted([0.004, 0.3, math.nan, math.nan, math.nan]) == pytest.approx(5 * 0.004)
    assert look_adjusted([0.5, 0.3, math.nan, math.nan, math.nan]) == 1.0
    assert planned_looks(3, 2, 11) == LOOKS and planned_looks(3, 3, 8) == (3, 6, 8)


def test_sequential_rule_controls_false_positives_under_optional_stopping():
    """2000 null comparisons, stopped at the first of looks 3, 5, ..., 11 that rejects (the worst
    case for optional stopping): the Bonferroni-over-looks rule keeps the false-positive rate at
    alpha, testing each look at alpha does not."""
    reps, alpha = 2000, 0.05
    d = np.random.default_rng(2021).normal(size=(reps, LOOKS[-1]))
    p = look_pvalues(d, LOOKS)
    margin = 3 * math.sqrt(alpha * (1 - alpha) / reps)  # ~0.015
    corrected = float(np.mean(look_adjusted(p) < alpha))
    naive = float(np.mean((p < alpha).any(axis=1)))
    assert corrected <= alpha + margin
    assert naive > alpha + margin  # why the correction is needed (about 0.15)
    assert corrected < naive


def test_decide_states():
    rng = np.random.default_rng(0)
    seeds = range(3)
    big = ({s: 10 + 0.1 * s for s in seeds}, {s: 0.01 * s * s for s in seeds})  # decided at look 1
    bad = ({s: -10 - 0.1 * s for s in seeds}, {s: 0.01 * s * s for s in seeds})
    null = ({s: x for s, x in zip(seeds, rng.normal(size=3))}, {s: 0.0 for s in seeds})
    st = decide({"big": big, "bad": bad, "null": null}, LOOKS)
    assert st["big"].state == "helped" and st["bad"].state == "hurt" and st["big"].looks_reached == 1
    assert st["null"].state == "undecided" and st["null"].needs_more_seeds and not st["null"].at_max
    p_adj = [min(1.0, 5 * look_pvalues(paired_differences(*c), LOOKS)[0]) for c in (big, bad, null)]
    assert [st[k].p_adj for k in ("big", "bad", "null")] == pytest.approx(p_adj)
    assert [st[k].p_holm for k in ("big", "bad", "null")] == pytest.approx(holm(p_adj))
    # lower is better: the same numbers flip the direction
    assert decide({"big": big}, LOOKS, higher_is_better=False)["big"].state == "hurt"
    # precision rule, and running out of planned seeds
    assert decide({"null": null}, LOOKS, target_halfwidth=100.0)["null"].state == "precise"
    a11, b11 = rng.normal(size=11), rng.normal(size=11)
    end = decide({"x": (a11, b11)}, LOOKS)["x"]
    assert end.at_max and end.looks_reached == 5 and end.state in ("not shown", "helped", "hurt")
    assert not end.needs_more_seeds
    assert decide({"empty": ([], [])}, LOOKS)["empty"].state == "undecided"
    const = decide({"c": ([1.0] * 5, [0.0] * 5)}, LOOKS)["c"]  # zero variance: no t-test, no decision
    assert const.state == "undecided" and math.isnan(const.p_adj) and np.isnan(look_pvalues([1.0] * 5, LOOKS)).all()
    strict_json(st)


def test_large_effect_decided_early_and_borderline_needs_the_correction():
    """A large true effect (mean 1, SD 0.1) is decided at the first look (3 seeds) in most runs and
    by the second in all; a single look p-value between alpha/K and alpha does not decide."""
    d = np.random.default_rng(3).normal(1.0, 0.1, size=(1000, LOOKS[-1]))
    p = look_pvalues(d, LOOKS)
    by_look = [np.mean(look_adjusted(np.where(np.arange(5) < k, p, np.nan)) < 0.05) for k in (1, 2)]
    assert by_look[0] > 0.9 and by_look[1] == 1.0
    st = decide({"x": ([1.02, 0.95, 1.07], [0.0, 0.0, 0.0])}, LOOKS)["x"]  # one such run
    assert st.state == "helped" and st.n == 3 and st.looks_reached == 1 and not st.needs_more_seeds
    d = np.array([1.0, 1.2, 1.5])
    assert 0.01 < stats.ttest_1samp(d, 0).pvalue < 0.05
    assert decide({"x": (d, np.zeros(3))}, LOOKS)["x"].state == "undecided"
    assert decide({"x": (d, np.zeros(3))}, (3,))["x"].state == "helped"  # one planned look: alpha itself
