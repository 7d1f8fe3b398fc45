"""Data audit: LSH near-duplicates (recall, exactness, multi-probe, modes) and fuzzy record linkage."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from reglab.audit import CosineIndex, Neighbors, exact_duplicates, exact_neighbors, find_duplicates, knn_recall, recall
from reglab.audit.link import (
    LinkScore,
    cross_validate,
    link_tables,
    make_tables,
    normalize,
    one_to_one,
    pair_features,
    score_matches,
    truth_positions,
)
from reglab.errors import ReglabError


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def at_cosine(x: np.ndarray, c: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors with cosine exactly ``c`` to the unit rows ``x``."""
    z = rng.standard_normal(x.shape)
    z -= (z * x).sum(1, keepdims=True) * x
    c = np.asarray(c, dtype=np.float64).reshape(-1, 1)
    return c * x + np.sqrt(1 - c**2) * unit(z)


def planted(n_a=3000, n_b=600, d=64, n_dup=80, n_decoy=80, seed=0):
    """A and B random; ``n_dup`` B rows at cosine 0.97..0.999 to A rows, ``n_decoy`` at 0.80..0.90."""
    rng = np.random.default_rng(seed)
    a = unit(rng.standard_normal((n_a, d)))
    b = unit(rng.standard_normal((n_b, d)))
    src = rng.choice(n_a, n_dup + n_decoy, replace=False)
    dst = rng.choice(n_b, n_dup + n_decoy, replace=False)
    cos = np.concatenate([rng.uniform(0.97, 0.999, n_dup), rng.uniform(0.80, 0.90, n_decoy)])
    b[dst] = at_cosine(a[src], cos, rng)
    return a.astype(np.float32), b.astype(np.float32), set(zip(src[:n_dup].tolist(), dst[:n_dup].tolist()))


# ----------------------------------------------------------------------------------------------
# near-duplicates
# ----------------------------------------------------------------------------------------------
def test_lsh_finds_planted_duplicates_and_nothing_below_threshold():
    a, b, dups = planted()
    res = find_duplicates(a, b, threshold=0.95, center=False)
    found = set(zip(res.i.tolist(), res.j.tolist()))
    assert found == dups  # recall 1, and the 0.80-0.90 decoys are rejected
    true_cos = (a[res.i] * b[res.j]).sum(1)
    np.testing.assert_allclose(res.cosine, true_cos, atol=1e-5)
    assert (true_cos >= 0.95).all() and np.all(np.diff(res.cosine) <= 0)  # sorted by decreasing cosine
    s = res.summary()
    assert s["pairs"] == len(dups) == s["rows_b_with_duplicate"] and s["mode"] == "between"
    assert res.stats["verified"] < 0.01 * len(a) * len(b)  # far from a quadratic pass
    exact = exact_duplicates(a, b, threshold=0.95, center=False)
    assert set(zip(exact.i.tolist(), exact.j.tolist())) == dups


def test_within_mode_pairs_once_without_self_pairs():
    rng = np.random.default_rng(1)
    x = unit(rng.standard_normal((2000, 48)))
    groups = rng.choice(2000, (60, 3), replace=False)  # 60 triplets of near-copies: 3 pairs each
    for g in groups:
        x[g[1:]] = at_cosine(np.repeat(x[g[:1]], 2, 0), rng.uniform(0.985, 0.999, 2), rng)
    res = find_duplicates(x, threshold=0.95, center=False)
    assert res.within and (res.i < res.j).all()
    keys = res.keys()
    assert len(np.unique(keys)) == len(keys)
    expected = {tuple(sorted(p)) for g in groups for p in itertools.combinations(g.tolist(), 2)}
    assert set(zip(res.i.tolist(), res.j.tolist())) == expected
    assert recall(res, exact_duplicates(x, threshold=0.95, center=False)) == 1.0


def test_recall_against_exact_search_on_random_data():
    rng = np.random.default_rng(2)
    a = unit(rng.standard_normal((4000, 96)))
    b = unit(rng.standard_normal((1000, 96)))
    src, dst = rng.choice(4000, 300, replace=False), rng.choice(1000, 300, replace=False)
    b[dst] = at_cosine(a[src], rng.uniform(0.95, 1.0, 300), rng)  # many pairs close to the threshold
    exact = exact_duplicates(a, b, threshold=0.95, center=False)
    assert 280 <= len(exact) <= 300
    res = find_duplicates(a, b, threshold=0.95, center=False)
    assert recall(res, exact) >= 0.97
    assert np.isin(res.keys(), exact.keys()).all()  # everything reported is a true pair


def test_probe_zero_recall_matches_collision_probability_and_probing_raises_it():
    """One table of 16 bits: a pair at cosine c shares a bucket with probability (1 - acos(c)/pi)^16
    (Charikar 2002); probing Hamming radius 1 and 2 adds the binomial terms."""
    rng = np.random.default_rng(3)
    n, c, bits = 600, 0.96, 16
    a = unit(rng.standard_normal((n, 128)))
    b = at_cosine(a, np.full(n, c), rng)
    exact = exact_duplicates(a, b, threshold=0.95, center=False)
    assert len(exact) == n
    p = 1 - math.acos(c) / math.pi
    expect = [sum(math.comb(bits, k) * p ** (bits - k) * (1 - p) ** k for k in range(r + 1)) for r in range(3)]
    got = [recall(find_duplicates(a, b, bits=bits, tables=1, probe=r, threshold=0.95, center=False, seed=5), exact)
           for r in range(3)]
    for g, e in zip(got, expect):
        assert abs(g - e) < 4 * math.sqrt(e * (1 - e) / n) + 0.01
    assert got[0] < got[1] < got[2]
    # more tables also raise recall
    assert recall(find_duplicates(a, b, bits=bits, tables=8, probe=1, threshold=0.95, center=False), exact) > got[1]


def test_giant_buckets_and_sketch_filter_do_not_change_results():
    rng = np.random.default_rng(4)
    centre = unit(rng.standard_normal(32))
    # a tight cluster (one huge bucket) plus background; some cluster members are near-copies
    a = np.concatenate([at_cosine(np.tile(centre, (800, 1)), rng.uniform(0.97, 0.995, 800), rng),
                        unit(rng.standard_normal((1500, 32)))]).astype(np.float32)
    base = find_duplicates(a, threshold=0.95, center=False, max_bucket=100_000, sketch_tail=0.0)
    giant = find_duplicates(a, threshold=0.95, center=False, max_bucket=50)
    assert giant.stats["giant_buckets"] > 0 and base.stats["giant_buckets"] == 0
    assert set(base.keys().tolist()) == set(giant.keys().tolist())
    exact = exact_duplicates(a, threshold=0.95, center=False)
    assert len(exact) > 100 and recall(giant, exact) >= 0.95
    assert np.isin(giant.keys(), exact.keys()).all()


def test_centring_constant_rows_and_bad_knobs():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (50, 3, 8, 8)).astype(np.uint8)
    brighter = np.clip(img.astype(int) + 20, 0, 255).astype(np.uint8)  # same picture, brighter
    flat = np.full((2, 3, 8, 8), 7, np.uint8)  # constant images: no direction after centring
    x = np.concatenate([img, brighter[:10], flat])
    res = find_duplicates(x, threshold=0.95)
    assert {(int(i), int(j)) for i, j in zip(res.i, res.j)} >= {(k, 50 + k) for k in range(10)}
    assert res.stats["zero_rows_a"] == 2 and not np.isin([60, 61], np.concatenate([res.i, res.j])).any()
    for bad in (dict(probe=3), dict(threshold=0.0), dict(bits=0), dict(tables=0)):
        with pytest.raises(ReglabError):
            find_duplicates(x, **bad)
    with pytest.raises(ReglabError):
        find_duplicates(x, np.zeros((3, 5)))


# ----------------------------------------------------------------------------------------------
# record linkage
# ----------------------------------------------------------------------------------------------
def test_normalize_and_features():
    assert normalize("Lefèvre, Zoë") == "lefevre zoe"
    assert normalize("ØSTERGAARD  Łukasz") == "ostergaard lukasz"
    assert normalize("R&D") == "r and d" and normalize(None) == ""
    f = pair_features(["human resources", "garcia lopez jose"], ["hr", "jose garcia", "finance"])
    assert f.shape == (2, 3, 7) and f.min() >= 0 and f.max() <= 1
    assert f[0, 0, 6] == 1.0  # acronym: hr <-> human resources
    assert f[1, 1, 3] == 1.0  # token_set_ratio: a subset of tokens matches fully
    assert f[1, 1].mean() > f[1, 2].mean()


def test_one_to_one_is_maximum_weight_and_threshold_abstains():
    rng = np.random.default_rng(6)
    prob = rng.uniform(0, 1, (5, 5))
    ra, rb, p = one_to_one(prob, 0.0)
    assert len(set(ra)) == len(ra) == len(set(rb)) == 5
    best = max(sum(prob[i, perm[i]] for i in range(5)) for perm in itertools.permutations(range(5)))
    assert math.isclose(p.sum(), best, rel_tol=1e-9)
    ra, rb, p = one_to_one(prob, 0.6)
    assert (p > 0.6).all() and len(set(ra)) == len(ra) and len(set(rb)) == len(rb)
    assert len(one_to_one(np.ones((3, 3)), 1.0)[0]) == 0  # threshold 1 abstains everywhere


def test_classifier_beats_levenshtein_baseline_in_cross_validation():
    a, b, truth = make_tables(300, seed=1)
    assert len(truth) == 240 and len(b) == 285
    assert a["name"].str.contains("[áéíóúüöçşøł]", regex=True).any()
    cv = cross_validate(a, b, truth, ["name", "department"], folds=3, seed=0)
    clf, lev = cv["classifier"].total, cv["levenshtein"].total
    assert clf.n == lev.n == 300
    assert clf.rates()["correct"] >= 0.6 and clf.rates()["wrong"] <= 0.05
    assert clf.rates()["correct"] > lev.rates()["correct"] + 0.2
    # abstaining everywhere: every partnered record is missed, nothing is matched
    never = cross_validate(a, b, truth, ["name", "department"], folds=3, threshold=1.0)["classifier"].total
    assert never.correct == never.wrong == 0 and never.missed == 240 and never.abstained == 60


def test_cross_validation_candidates_are_all_b_records_not_taken_by_training_matches(monkeypatch):
    """Held-out A records compete for their partners and for *every* unpaired B record (not only the
    unpaired B records of their fold): each fold's matrix has len(B) - (training matches) columns."""
    import reglab.audit.link as link

    a, b, truth = make_tables(120, seed=3)
    shapes = []
    real = link.one_to_one

    def spy(prob, threshold=0.5):
        shapes.append(prob.shape)
        return real(prob, threshold)

    monkeypatch.setattr(link, "one_to_one", spy)
    link.cross_validate(a, b, truth, ["name"], folds=3, seed=0)
    n_pairs, lone_b = len(truth), len(b) - len(truth)
    assert sum(r for r, _ in shapes) == len(a)  # every A record is held out once
    for _, cols in shapes:
        held_out_partners = cols - lone_b
        assert 0 < held_out_partners < n_pairs  # all unpaired B records are candidates in every fold
    assert sum(c - lone_b for _, c in shapes) == n_pairs


def test_link_tables_matching_is_one_to_one_and_scores():
    a, b, truth = make_tables(150, seed=2)
    m = link_tables(a, b, truth, ["name", "department"])
    assert m["a_row"].is_unique and m["b_row"].is_unique and (m["probability"] > 0.5).all()
    pairs = truth_positions(a, b, truth)
    partner = np.full(len(a), -1)
    partner[pairs[:, 0]] = pairs[:, 1]
    s = score_matches(m["a_row"].to_numpy(), m["b_row"].to_numpy(), partner, np.arange(len(a)))
    assert s.n == len(a) and s.correct > 0.7 * len(pairs)
    assert LinkScore(1, 2, 3, 4) + LinkScore(1, 1, 1, 1) == LinkScore(2, 3, 4, 5)
    # truth from a shared column, and bad input
    a2, b2 = a.assign(key=range(len(a))), b.assign(key=-1)
    b2.loc[3, "key"] = 7
    assert truth_positions(a2, b2, "key").tolist() == [[7, 3]]
    with pytest.raises(ReglabError, match="column 'nme'"):
        link_tables(a, b, truth, ["nme"])
    with pytest.raises(ReglabError, match="one-to-one"):
        truth_positions(a, b, np.array([[0, 1], [0, 2]]))


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def test_cli_duplicates_and_link(tmp_path):
    from typer.testing import CliRunner

    from reglab.cli.audit import app

    runner = CliRunner()
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (400, 1, 8, 8)).astype(np.uint8)
    b = rng.integers(0, 256, (100, 1, 8, 8)).astype(np.uint8)
    b[:12] = np.clip(a[100:112].astype(int) + rng.integers(-6, 7, (12, 1, 8, 8)), 0, 255)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    out = tmp_path / "dup"
    r = runner.invoke(app, ["duplicates", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--threshold", "0.95",
                            "--out", str(out), "--json", "--exact"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["pairs"] == 12 and summary["recall"] == 1.0 and summary["mode"] == "between"
    pairs = pd.read_csv(out / "pairs.csv")
    assert sorted(zip(pairs["i"], pairs["j"])) == [(100 + k, k) for k in range(12)]
    assert (out / "pairs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    r = runner.invoke(app, ["duplicates", str(tmp_path / "missing.npy")])
    assert isinstance(r.exception, ReglabError) and "missing.npy" in str(r.exception)

    ta, tb, truth = make_tables(120, seed=4)
    ta.to_csv(tmp_path / "A.csv", index=False)
    tb.to_csv(tmp_path / "B.csv", index=False)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    args = ["link", str(tmp_path / "A.csv"), str(tmp_path / "B.csv"), "-c", "name", "-c", "department",
            "--truth", str(tmp_path / "truth.csv"), "--folds", "3", "--out", str(tmp_path / "lk"), "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["classifier"]["records"] == 120 and summary["classifier"]["correct"] > summary["levenshtein"]["correct"]
    matches = pd.read_csv(tmp_path / "lk" / "matches.csv")
    assert len(matches) == summary["matches"] and matches["b_id"].is_unique
    assert matches.merge(truth, on=["a_id", "b_id"]).shape[0] > 0.8 * len(matches)

    r = runner.invoke(app, args[:3] + ["-c", "surname", "--truth", str(tmp_path / "truth.csv")])
    assert isinstance(r.exception, ReglabError) and "surname" in str(r.exception)


def test_cli_duplicates_on_a_dataset_spec_uses_the_whole_training_set(tmp_path):
    """``--against test`` compares train + validation (the whole original training set) with test;
    ``--against val`` compares the loader's train with its validation carve-out. Counts and pairs
    match an exact search on the same arrays."""
    import torch
    from typer.testing import CliRunner

    from reglab.cli.audit import app
    from reglab.data import load

    d = load("digits")
    full = torch.cat([d.train.x, d.val.x]).numpy()
    runner = CliRunner()
    r = runner.invoke(app, ["duplicates", "digits", "--threshold", "0.98", "--json", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert (summary["n_a"], summary["n_b"]) == (len(d.train) + len(d.val), len(d.test))
    ex = exact_duplicates(full, d.test.x.numpy(), threshold=0.98)
    pairs = pd.read_csv(tmp_path / "pairs.csv")
    assert summary["pairs"] == len(pairs) == len(ex) > 0
    assert set(zip(pairs["i"], pairs["j"])) == set(zip(ex.i.tolist(), ex.j.tolist()))
    labels = np.concatenate([d.train.y.numpy(), d.val.y.numpy()])
    np.testing.assert_array_equal(pairs["label_i"], labels[pairs["i"]])
    assert (tmp_path / "pairs.png").is_file()

    r = runner.invoke(app, ["duplicates", "digits", "--against", "val", "--threshold", "0.98", "--json"])
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert (summary["n_a"], summary["n_b"]) == (len(d.train), len(d.val))
    r = runner.invoke(app, ["duplicates", "digits", "--against", "none", "--threshold", "0.98", "--json"])
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["mode"] == "within" and summary["n_a"] == len(full)
    assert summary["pairs"] == len(exact_duplicates(full, threshold=0.98))
    r = runner.invoke(app, ["duplicates", "digits", "--against", "train"])
    assert isinstance(r.exception, ReglabError) and "--against" in str(r.exception)


# ---- k nearest neighbours from the LSH index --------------------------------------------------------
def clustered(n=3000, d=24, clusters=150, noise=0.35, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d)).astype(np.float32)
    return centers[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, d)).astype(np.float32)


def test_knn_with_every_row_a_candidate_is_the_exact_answer_with_the_true_cosines():
    x = clustered(800)
    q = clustered(50, seed=1)
    index = CosineIndex(x, bits=3, tables=4)  # 8 buckets, probe 2 of 3 bits: nearly every row is a candidate
    found = index.query(q, k=7, probe=2)
    exact = exact_neighbors(x, q, k=7)
    assert knn_recall(found, exact) == 1.0
    assert np.array_equal(found.indices, exact.indices)
    ux = x / np.linalg.norm(x, axis=1, keepdims=True)
    uq = q / np.linalg.norm(q, axis=1, keepdims=True)
    truth = np.einsum("qkd,qd->qk", ux[found.indices], uq)  # cosine of each returned row, by the formula
    assert np.allclose(found.cosine, truth, atol=1e-5) and np.allclose(exact.cosine, truth, atol=1e-5)
    assert (np.diff(found.cosine, axis=1) <= 1e-7).all()  # most similar first
    brute = np.argsort(-(uq @ ux.T), axis=1, kind="stable")[:, :7]  # and the k best by a full sort
    assert np.array_equal(np.sort(brute, 1), np.sort(found.indices, 1))


def test_neighbors_of_index_rows_exclude_the_row_itself_and_recall_is_high_on_clusters():
    x = clustered(3000)
    rows = np.arange(0, 3000, 30)
    index = CosineIndex(x)
    found = index.neighbors_of(rows, k=5, probe=1)
    exact = exact_neighbors(x, x[rows], k=5, exclude=rows)
    assert not (found.indices == rows[:, None]).any() and not (exact.indices == rows[:, None]).any()
    assert knn_recall(found, exact) > 0.9
    assert (found.candidates < len(x) / 3).all()  # far fewer rows verified than an exhaustive pass
    # fewer tables and no probing find fewer candidates and less of the truth
    sparse = CosineIndex(x, bits=16, tables=1).neighbors_of(rows, k=5, probe=0)
    assert sparse.candidates.mean() < found.candidates.mean() and knn_recall(sparse, exact) < knn_recall(found, exact)


def test_knn_recall_counts_the_shared_rows_and_zero_rows_have_no_neighbours():
    a = Neighbors(np.array([[1, 2, 3], [4, 5, -1]]), np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
    b = Neighbors(np.array([[3, 2, 9], [4, 6, 7]]), np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
    assert knn_recall(a, b) == pytest.approx((2 + 1) / 6)
    x = clustered(200)
    x[5] = 0.0
    found = CosineIndex(x).query(np.vstack([x[:3], np.zeros((1, x.shape[1]))]), k=4)
    assert (found.indices[3] == -1).all() and np.isnan(found.cosine[3]).all()
    assert 5 not in found.indices  # a zero row is never a neighbour
    with pytest.raises(ReglabError, match="k must be"):
        CosineIndex(x).query(x[:2], k=0)
    with pytest.raises(ReglabError, match="values"):
        CosineIndex(x).query(np.ones((2, 3)), k=2)
