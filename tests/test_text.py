"""Text classification building blocks: tokenizer/vocabulary, GoEmotions, the transformer classifier,
multilabel thresholds and reports, and token-level augmentation."""
from __future__ import annotations

import copy
import time
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from reglab.data import data_root
from reglab.engine.stacked import Stacked
from reglab.errors import ReglabError
from reglab.models import build_model
from reglab.metrics.multilabel import f1_scores, pos_weight, predict, probabilities, report, tune_thresholds
from reglab.techniques import make
from reglab.techniques.text_augment import augment_tokens
from reglab.data.synonyms import read_table, replace_synonyms, synonym_ids
from reglab.data.text import PAD, PAD_ID, UNK, UNK_ID, Vocab, encode_text_column, tokenize, tokenize_all


# ---- tokenizer and vocabulary ----------------------------------------------------------------------
def test_tokenize_words_punctuation_placeholders():
    assert tokenize("I didn't LOVE it, [NAME]!!") == ["i", "didn't", "love", "it", ",", "[name]", "!", "!"]
    assert tokenize("  ") == []
    assert tokenize("co-op 3.5 :)") == ["co", "-", "op", "3", ".", "5", ":", ")"]


def test_vocab_train_only_min_count_max_size_and_order():
    train = ["b b b a a c", "a b d", "e"]
    v = Vocab.build(train, min_count=2)
    assert v.tokens == ["<pad>", "<unk>", "b", "a"]  # b: 4, a: 3; c, d, e below min_count
    assert Vocab.build(list(reversed(train)), min_count=2).tokens == v.tokens  # order-independent
    assert Vocab.build(train, min_count=1).tokens == ["<pad>", "<unk>", "b", "a", "c", "d", "e"]  # ties alphabetical
    assert len(Vocab.build(train, min_count=1, max_size=4)) == 4
    with pytest.raises(ReglabError, match="min_count"):
        Vocab.build(train, min_count=0)

    ids, vocab, info = encode_text_column({"train": train, "test": ["a zebra b"]}, max_len=5, min_count=2)
    assert "zebra" not in vocab.index  # test words never enter the vocabulary
    assert ids["test"].tolist() == [[vocab.index["a"], UNK_ID, vocab.index["b"], PAD_ID, PAD_ID]]
    assert info["vocab_size"] == 4 and info["model_options"] == {"vocab_size": 4}
    assert info["unknown"]["test"] == pytest.approx(1 / 3)


def test_encode_pads_truncates_and_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    texts = [" ".join(rng.choice(words, size=rng.integers(0, 12))) for _ in range(300)]
    v = Vocab.build(texts[:200], min_count=2)
    x = v.encode(texts, max_len=8)
    assert x.dtype == torch.int64 and x.shape == (300, 8)
    for text, row in zip(texts, x.tolist()):
        expected = [v.index.get(t, UNK_ID) for t in tokenize(text)][:8]
        assert row == expected + [PAD_ID] * (8 - len(expected))
    assert v.decode(x[0]) == [t if t in v.index else "<unk>" for t in tokenize(texts[0])][:8]
    assert Vocab.from_dict(v.to_dict()).tokens == v.tokens


# ---- GoEmotions --------------------------------------------------------------------------------------
def _goemotions_dir():
    root = data_root()
    if root is None:
        pytest.skip("REGLAB_DATA is not set (offline GoEmotions copy)")
    if not (root / "goemotions" / "train.tsv.gz").is_file():
        pytest.skip(f"no GoEmotions copy under {root / 'goemotions'}")
    return root / "goemotions"


def test_goemotions_offline_copy(tmp_path, monkeypatch):
    from reglab.data import load
    from reglab.data.goemotions import read_tsv

    folder = _goemotions_dir()
    monkeypatch.setenv("REGLAB_CACHE", str(tmp_path))

    t0 = time.perf_counter()
    texts = read_tsv(folder / "train.tsv.gz")["text"].tolist()
    tokens = tokenize_all(texts)
    Vocab.build(tokens, min_count=2).encode(tokens, 64)
    seconds = time.perf_counter() - t0
    print(f"\nread + tokenize + vocab + encode of the {len(texts)} train texts: {seconds:.2f} s")
    assert seconds < 10.0

    d = load("goemotions", max_len=48, min_count=2)
    assert (len(d.train), len(d.val), len(d.test)) == (43_410, 5_426, 5_427)
    assert d.task == "multilabel" and d.kind == "text" and d.mean is None and d.input_shape == (48,)
    assert len(d.classes) == 28 and d.classes[27] == "neutral" and d.classes[0] == "admiration"
    assert d.train.x.dtype == torch.int64 and d.train.x.shape == (43_410, 48)
    assert d.train.y.dtype == torch.float32 and d.train.y.shape == (43_410, 28)
    assert set(d.train.y.unique().tolist()) == {0.0, 1.0} and (d.train.y.sum(1) >= 1).all()
    assert int(d.train.y[:, 27].sum()) == 14_219  # neutral, the most frequent label
    # the first train row: "My favourite food is anything I didn't have to cook myself." -> neutral
    vocab = d.info["vocab"]
    assert vocab.decode(d.train.x[0]) == tokenize("My favourite food is anything I didn't have to cook myself.")
    assert d.train.y[0].nonzero().flatten().tolist() == [27]
    assert d.info["vocab_size"] == len(vocab) and d.train.x.max() < len(vocab)
    # right-padded: no padding before a token
    x = d.train.x
    assert not ((x[:, :-1] == PAD_ID) & (x[:, 1:] != PAD_ID)).any()
    # cached: the second load reads the same tensors back
    assert list((tmp_path / "goemotions").glob("*.pt"))
    again = load("goemotions", max_len=48, min_count=2)
    assert torch.equal(again.test.x, d.test.x) and torch.equal(again.val.y, d.val.y)
    assert again.info["vocab"].tokens == vocab.tokens


def test_goemotions_without_a_copy_or_datasets_is_a_one_line_error(tmp_path, monkeypatch):
    import builtins

    from reglab.data import load

    monkeypatch.setenv("REGLAB_DATA", str(tmp_path))  # no goemotions folder there
    monkeypatch.setenv("REGLAB_CACHE", str(tmp_path / "cache"))
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ReglabError, match="no offline copy.*pip install datasets") as err:
        load("goemotions")
    assert "\n" not in str(err.value)
    with pytest.raises(ReglabError, match="max_vocab"):
        load("goemotions", max_vocab=1)


# ---- transformer ----------------------------------------------------------------------------------
def _ids(b, n, lengths, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, vocab, (b, n), generator=g)
    x[torch.arange(n) >= torch.as_tensor(lengths).unsqueeze(1)] = PAD_ID
    return x


@pytest.mark.parametrize("pooling", ["mean", "max", "mean+max"])
def test_transformer_padding_never_changes_the_output(pooling):
    torch.manual_seed(0)
    model = build_model("transformer", (24,), 5, vocab_size=50, dim=32, heads=4, layers=2, ff=64,
                        dropout=0.0, pooling=pooling)
    short = _ids(6, 10, [10, 7, 3, 1, 9, 5])
    longer = torch.cat([short, torch.zeros(6, 14, dtype=torch.long)], 1)  # same texts, 14 more pads
    for mode in ("train", "eval"):
        getattr(model, mode)()
        a, b = model(short), model(longer)
        assert a.shape == (6, 5)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # but a token change does change it, and an empty text gives a finite output
    changed = short.clone()
    changed[2, 0] = changed[2, 0] % 49 + 1
    assert (model(changed)[2] - model(short)[2]).abs().max() > 1e-4
    assert torch.isfinite(model(torch.zeros(2, 24, dtype=torch.long))).all()


def test_transformer_matches_torch_encoder_layer():
    from torch import nn

    from reglab.models.transformer import EncoderLayer

    torch.manual_seed(0)
    for norm_first in (False, True):
        mine = EncoderLayer(32, 4, 64, 0.0, "gelu", norm_first).eval()
        ref = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu", batch_first=True,
                                         norm_first=norm_first).eval()
        with torch.no_grad():
            ref.self_attn.in_proj_weight.copy_(mine.attn.qkv.weight)
            ref.self_attn.in_proj_bias.copy_(mine.attn.qkv.bias)
            ref.self_attn.out_proj.load_state_dict(mine.attn.out.state_dict())
            ref.linear1.load_state_dict(mine.ff[0].state_dict())
            ref.linear2.load_state_dict(mine.ff[2].state_dict())
        h = torch.randn(5, 12, 32)
        pad = torch.arange(12) >= torch.tensor([12, 8, 3, 1, 10]).unsqueeze(1)
        torch.testing.assert_close(mine(h, pad)[~pad], ref(h, src_key_padding_mask=pad)[~pad], atol=1e-5, rtol=1e-5)


def test_transformer_under_vmap_matches_each_seed_and_trains():
    torch.manual_seed(1)
    members = [build_model("transformer", (16,), 3, vocab_size=40, dim=16, heads=2, layers=1, ff=32, dropout=0.0)
               for _ in range(3)]
    ens = Stacked(members)
    x = _ids(3 * 8, 16, torch.randint(1, 17, (24,)).tolist(), vocab=40).view(3, 8, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no slow per-seed fallback of vmap
        for mode in ("train", "eval"):
            getattr(ens, mode)()
            out = ens(x)
            for s in range(3):
                torch.testing.assert_close(out[s], getattr(ens.member(s), mode)()(x[s]), atol=1e-5, rtol=1e-5)
        ens.train()
        loss = ens(x).pow(2).sum()
        loss.backward()
    grads = ens.stacked_grads()
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert grads["embed.weight"][:, PAD_ID].abs().max() == 0  # padding row gets no gradient
    assert grads["head.weight"].abs().sum() > 0


def test_transformer_options_are_checked():
    with pytest.raises(ReglabError, match="vocab_size is required"):
        build_model("transformer", (16,), 3)
    with pytest.raises(ReglabError, match="divisible"):
        build_model("transformer", (16,), 3, vocab_size=10, dim=10, heads=3)
    with pytest.raises(ReglabError, match="pooling"):
        build_model("transformer", (16,), 3, vocab_size=10, pooling="sum")
    model = build_model("transformer", (16,), 3, vocab_size=10, dim=8, heads=2)
    with pytest.raises(ReglabError, match="exceeds max_len"):
        model(torch.ones(1, 17, dtype=torch.long))


# ---- multilabel ----------------------------------------------------------------------------------
def test_pos_weight_is_neg_over_pos():
    y = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.float32)
    torch.testing.assert_close(pos_weight(y), torch.tensor([1 / 3, 3.0, 1.0]))
    torch.testing.assert_close(pos_weight(y, max_weight=2.0), torch.tensor([1 / 3, 2.0, 1.0]))


def _brute_best_f1(p, y):
    best = 0.0
    for t in np.unique(p):
        pred = p >= t
        tp = (pred & (y == 1)).sum()
        best = max(best, 2 * tp / (pred.sum() + y.sum()))
    return best


def test_tuned_thresholds_reach_the_best_f1():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(400, 6, generator=g) < torch.tensor([0.05, 0.1, 0.2, 0.3, 0.5, 0.0])).float()
    probs = (0.6 * y + 0.7 * torch.rand(400, 6, generator=g)).clamp(0, 1)
    probs[:40, 1] = 0.5  # ties
    probs = (probs * 20).round() / 20  # many ties
    thr = tune_thresholds(probs, y)
    assert thr[5] == 0.5  # no positives: the default
    for k in range(5):
        p, t = probs[:, k].numpy(), y[:, k].numpy()
        f1 = precision_recall_fscore_support(t, (p >= thr[k].item()).astype(int), average="binary", zero_division=0)[2]
        assert f1 == pytest.approx(_brute_best_f1(p, t), abs=1e-9)
    glob = tune_thresholds(probs, y, per_label=False)
    assert torch.all(glob == glob[0])
    micro = f1_scores(torch.logit(probs.clamp(1e-6, 1 - 1e-6)), y, glob)["micro_f1"]
    assert micro.item() == pytest.approx(_brute_best_f1(probs.flatten().numpy(), y.flatten().numpy()), abs=1e-6)


def test_report_and_f1_scores_match_sklearn():
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(300, 4, generator=g) < 0.3).float()
    logits = 3 * (y - 0.5) + 2 * torch.randn(300, 4, generator=g)
    probs = probabilities(logits)
    thr = torch.tensor([0.5, 0.3, 0.7, 0.5])
    rep = report(probs, y, ["a", "b", "c", "d"], thr)
    pred = predict(probs, thr).numpy().astype(int)
    for avg in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(y.numpy(), pred, average=avg, zero_division=0)
        assert (rep.__dict__[avg]["precision"], rep.__dict__[avg]["recall"], rep.__dict__[avg]["f1"]) == pytest.approx((p, r, f))
    assert rep.support.tolist() == y.sum(0).int().tolist()
    f1 = precision_recall_fscore_support(y.numpy(), pred, average=None, zero_division=0)[2]
    np.testing.assert_allclose(rep.f1, f1)
    md = rep.markdown()
    assert md.count("\n") == 1 + 4 + 2 and "| b |" in md and "**macro avg**" in md
    # torch F1 over stacked seeds (S, N, K)
    stacked = torch.stack([logits, -logits])
    scores = f1_scores(stacked, y, 0.5)
    for s in range(2):
        pred_s = (stacked[s] >= 0).numpy().astype(int)
        for avg in ("micro", "macro"):
            ref = precision_recall_fscore_support(y.numpy(), pred_s, average=avg, zero_division=0)[2]
            assert scores[f"{avg}_f1"][s].item() == pytest.approx(ref, abs=1e-9)


# ---- text augmentation ---------------------------------------------------------------------------
def _is_right_padded(x):
    return not ((x[:, :-1] == PAD_ID) & (x[:, 1:] != PAD_ID)).any()


def test_augment_keeps_padding_at_the_end_and_is_reproducible():
    x = _ids(500, 32, torch.randint(0, 33, (500,), generator=torch.Generator().manual_seed(3)).tolist(), vocab=100)
    x[0] = 0  # an empty text stays empty
    a = augment_tokens(x, 0.2, 0.2, 0.2, torch.Generator().manual_seed(7), 100)
    b = augment_tokens(x, 0.2, 0.2, 0.2, torch.Generator().manual_seed(7), 100)
    c = augment_tokens(x, 0.2, 0.2, 0.2, torch.Generator().manual_seed(8), 100)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert _is_right_padded(a) and (a[0] == 0).all()
    assert (a[x[:, 0] != 0, 0] != 0).all()  # no non-empty text loses all its tokens
    assert ((a == 0) | (a >= 1)).all() and a.max() < 100
    assert torch.equal(augment_tokens(x, 0.0, 0.0, 0.0, torch.Generator(), 100), x)


def test_augment_rates_match_the_probabilities():
    n = 4000
    x = _ids(n, 40, [20] * n, vocab=1000, seed=4)  # 20 tokens + 20 pads: insertions are never cut
    g = torch.Generator().manual_seed(0)
    deleted = augment_tokens(x, 0.3, 0.0, 0.0, g, 1000)
    kept = (deleted != 0).sum(1).float()
    assert 1 - kept.mean().item() / 20 == pytest.approx(0.3, abs=0.01)
    # survivors keep their order: each row is a subsequence of the original
    for row, orig in zip(deleted[:50].tolist(), x[:50].tolist()):
        it = iter(orig)
        assert all(t in it for t in row if t)

    inserted = augment_tokens(x, 0.0, 0.25, 0.0, g, 1000)
    assert (inserted != 0).sum(1).float().mean().item() / 20 - 1 == pytest.approx(0.25, abs=0.01)
    assert _is_right_padded(inserted)

    distinct = torch.arange(1, 21).repeat(n, 1)
    distinct = torch.cat([distinct, torch.zeros(n, 5, dtype=torch.long)], 1)
    swapped = augment_tokens(distinct, 0.0, 0.0, 0.2, g, 1000)
    assert torch.equal(swapped.sort(1).values, distinct.sort(1).values)  # a permutation of each row
    assert (swapped[:, 20:] == 0).all()  # padding untouched
    assert (swapped[:, 0] != 1).float().mean().item() == pytest.approx(0.2, abs=0.02)  # pair (0, 1) swapped
    assert ((swapped - distinct).abs() <= 2).all()


def test_text_augment_technique_uses_each_seeds_generator():
    tech = make("text_augment", p_delete=0.2)
    assert tech.knobs.p_insert == 0.05 and tech.knobs.p_swap == 0.05
    with pytest.raises(ReglabError, match="p_delete"):
        make("text_augment", p_delete=1.5)
    x = _ids(64, 20, [20] * 64, vocab=30)
    xs = torch.stack([x, x])
    data = SimpleNamespace(info={"vocab_size": 30}, kind="text", name="toy")
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    run = SimpleNamespace(data=data, stream=lambda name: gens)
    y = torch.zeros(2, 64, 3)
    out, y_out = tech.transform_batch(run, xs, y)
    assert y_out is y and out.shape == xs.shape
    assert not torch.equal(out[0], out[1])  # seeds differ
    alone = augment_tokens(x, 0.2, 0.05, 0.05, torch.Generator().manual_seed(2), 30)
    assert torch.equal(out[1], alone)  # seed 1 alone == seed 1 in a group
    with pytest.raises(ReglabError, match="text dataset"):
        tech.apply_model(torch.nn.Linear(2, 2), SimpleNamespace(kind="image", name="cifar10", info={}))
    copy.deepcopy(tech)


# ---- synonym replacement (EDA's SR) ----------------------------------------------------------------
def test_the_shipped_synonym_table_is_symmetric_single_words_and_big_enough():
    table = read_table()
    assert len(table) > 400 and table["happy"][:2] and "glad" in table["happy"] and "happy" in table["glad"]
    for word, syns in table.items():
        assert word not in syns and syns == tuple(sorted(syns))
        assert all(word in table[s] for s in syns)  # a group makes its members each other's synonyms
        assert tokenize(word) == [word]


def test_synonym_ids_and_replacement_rates_follow_p_and_are_uniform_over_synonyms(tmp_path):
    path = tmp_path / "syn.txt"
    path.write_text("# a comment\nhappy, glad, joyful, cheerful\nsad, unhappy\n")
    vocab = Vocab([PAD, UNK, "happy", "glad", "joyful", "sad", "the", "unhappy"])  # "cheerful" is not in it
    choices, counts = synonym_ids(vocab, read_table(path))
    idx = vocab.index
    assert counts.tolist() == [0, 0, 2, 2, 2, 1, 0, 1]
    assert set(choices[idx["happy"], :2].tolist()) == {idx["glad"], idx["joyful"]}
    assert choices[idx["sad"], 0] == idx["unhappy"] and choices[idx["the"], 0] == idx["the"]
    n, p = 20000, 0.3
    x = torch.tensor([[idx["happy"], idx["sad"], idx["the"], UNK_ID, PAD_ID]]).repeat(n, 1)
    g = torch.Generator().manual_seed(0)
    u, v = torch.rand(2, n, 5, generator=g)
    out = replace_synonyms(x, choices, counts, p, u, v)
    assert torch.equal(out[:, 2:], x[:, 2:])  # no synonym, <unk>, padding: never changed
    happy = out[:, 0]
    # P(happy -> glad) = P(happy -> joyful) = p / 2, P(kept) = 1 - p; "sad" -> "unhappy" with p
    assert (happy == idx["glad"]).float().mean().item() == pytest.approx(p / 2, abs=0.01)
    assert (happy == idx["joyful"]).float().mean().item() == pytest.approx(p / 2, abs=0.01)
    assert (happy == idx["happy"]).float().mean().item() == pytest.approx(1 - p, abs=0.012)
    assert (out[:, 1] == idx["unhappy"]).float().mean().item() == pytest.approx(p, abs=0.012)
    # the decision is u < p, the choice floor(v * count): the same draws give the same tokens
    expect = torch.where(u[:, 0] < p, torch.where(v[:, 0] < 0.5, choices[idx["happy"], 0], choices[idx["happy"], 1]), x[:, 0])
    assert torch.equal(happy, expect)
    with pytest.raises(ReglabError, match="line 1"):
        (tmp_path / "bad.txt").write_text("let down, disappointed\n")
        read_table(tmp_path / "bad.txt")


def test_synonym_replacement_technique_uses_each_seeds_stream_and_only_text_data():
    tech = make("synonym_replacement", p=0.5)
    vocab = Vocab([PAD, UNK, "happy", "glad", "sad", "unhappy", "the"])
    data = SimpleNamespace(info={"vocab": vocab, "vocab_size": len(vocab)}, kind="text", name="toy")
    tech.apply_model(torch.nn.Linear(2, 2), data)
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    run = SimpleNamespace(data=data, stream=lambda name: gens, device=torch.device("cpu"))
    tech.on_fit_start(run)
    x = torch.tensor([[2, 4, 6, 3, 0]]).repeat(64, 1)
    out, _ = tech.transform_batch(run, torch.stack([x, x]), torch.zeros(2, 64))
    assert not torch.equal(out[0], out[1])
    choices, counts = synonym_ids(vocab, read_table())
    u, v = torch.rand(2, 64, 5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out[1], replace_synonyms(x, choices, counts, 0.5, u, v))  # seed 1 alone == in a group
    assert ((out == 2) | (out == 3)).sum() == 2 * 64 * 2  # happy <-> glad only: the count is kept
    with pytest.raises(ReglabError, match="text dataset"):
        tech.apply_model(torch.nn.Linear(2, 2), SimpleNamespace(kind="image", name="cifar10", info={}))
    with pytest.raises(ReglabError, match="not found"):
        make("synonym_replacement", table="/nonexistent/syn.txt").apply_model(torch.nn.Linear(2, 2), data)


# ---- reports of stored runs ------------------------------------------------------------------------
def test_train_subset_and_study_class_report_reproduce_the_stored_metrics(tmp_path, monkeypatch):
    """A tiny GoEmotions study (train_size subset, 2 configurations x 2 seeds): the per-class report
    reloads each best-configuration checkpoint, and its 0.5-threshold micro/macro F1 on test equal the
    metrics the trainer stored; tuned thresholds never lower validation F1 of any label."""
    from reglab.data import load
    from reglab.study.class_report import checkpoint_probabilities, study_class_report, study_f1_table
    from reglab.study.runner import run_study
    from reglab.study.spec import parse_spec
    from reglab.study.store import Store

    _goemotions_dir()
    monkeypatch.setenv("REGLAB_CACHE", str(tmp_path / "cache"))
    opts = {"max_len": 16, "train_size": 400}
    d = load("goemotions", **opts)
    again = load("goemotions", **opts, split_seed=1)
    assert len(d.train) == 400 and len(d.val) == 5_426 and len(d.test) == 5_427
    assert not torch.equal(d.train.x, again.train.x)  # split_seed draws the subset
    spec = parse_spec({
        "name": "tiny", "mode": "isolated", "seeds": 2, "metric": "val_f1_micro",
        "base": {"dataset": "goemotions", "dataset_options": opts, "model": "transformer",
                 "model_options": {"dim": 16, "heads": 2, "layers": 1, "ff": 32}, "epochs": 3, "batch_size": 64},
        "baseline": [{"name": "adamw", "lr": 5e-3}],
        "steps": [{"name": "early stopping", "techniques": [{"name": "early_stopping", "patience": 1}]}],
    })
    run_study(spec, tmp_path / "study", grouping="single", progress=False)
    md = study_class_report(tmp_path / "study")
    text = md.read_text()
    assert text.count("\n| ") >= 28 + 2 and "| neutral |" in text and "macro avg" in text
    _, rows = study_f1_table(tmp_path / "study")
    best = max(rows, key=lambda r: np.mean(r["val_f1_micro"]))
    assert f"**{best['label']}**" in text
    for seed, path in best["checkpoints"].items():
        probs, seeds, data = checkpoint_probabilities(path, data=d)
        s = seeds.index(seed)
        stored = next(r for r in Store(tmp_path / "study" / "results.sqlite").runs()
                      if r.config_key == best["key"] and r.seed == seed).metrics
        got = f1_scores(torch.logit(probs["test"][s].double()), data.test.y)
        assert abs(got["micro_f1"].item() - stored["test_f1_micro"]) < 1e-4
        assert abs(got["macro_f1"].item() - stored["test_f1_macro"]) < 1e-4
        thr = tune_thresholds(probs["val"][s], data.val.y)
        tuned = report(probs["val"][s], data.val.y, data.classes, thr).f1
        plain = report(probs["val"][s], data.val.y, data.classes, 0.5).f1
        assert (tuned >= plain - 1e-9).all()


def test_csv_text_column_is_tokenized_with_a_training_vocabulary(tmp_path):
    import random

    from reglab.config import RunConfig
    from reglab.data import load
    from reglab.engine.loop import fit

    rng = random.Random(0)
    good, bad = ["great", "lovely", "superb", "fine"], ["awful", "poor", "boring", "bad"]
    rows = ["review,label,split"]
    for i in range(400):
        label = i % 2
        words = [rng.choice(good if label else bad) for _ in range(rng.randint(2, 6))] + ["movie"]
        split = "test" if i >= 360 else "train"
        if split == "test" and i == 399:
            words.append("zyzzyva")  # a word seen in no training row
        rows.append(f"{' '.join(words)},{'pos' if label else 'neg'},{split}")
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(rows))
    data = load(f"csv:{path}", target="label", text="review", max_len=8, min_count=1)
    assert data.kind == "text" and data.input_shape == (8,) and data.classes == ["neg", "pos"]
    assert data.train.x.dtype == torch.int64 and data.train.x.shape[1] == 8
    assert data.info["vocab_size"] == 2 + len(good) + len(bad) + 1  # <pad>, <unk>, the words, "movie"
    assert (data.test.x[-1] == 1).any()  # the unseen test word is <unk>
    assert (data.train.x[:, -1] == 0).any()  # short reviews are padded with <pad> = 0
    with pytest.raises(ReglabError, match="text column 'label' is the target"):
        load(f"csv:{path}", target="label", text="label")
    with pytest.raises(ReglabError, match="text"):
        load(f"csv:{path}", target="label", text="reviw")
    cfg = RunConfig(dataset=f"csv:{path}", dataset_options={"target": "label", "text": "review", "max_len": 8,
                    "min_count": 1}, model="transformer", epochs=4, batch_size=32,
                    techniques=[{"name": "adamw", "lr": 3e-3}])
    result = fit(cfg, data=data, progress=False)[0]
    assert result.metrics["test_accuracy"] > 0.9
