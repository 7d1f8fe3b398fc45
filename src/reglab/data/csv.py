"""Tabular classification or regression from a CSV file: ``load("csv:houses.csv", target="price")``.

Read with pandas. The target is a named column; ``task="auto"`` treats a non-numeric, boolean, or
integer target with at most 50 distinct values as classification and anything else as regression.
Class ids follow the sorted target values (numerically for numbers, else by their text); ``classes``
holds their names. Features are every other column unless listed; a column named ``standard_error``
(or ``standard_error_column``) is per-example side information, stored in
``Split.extra["standard_error"]`` and never used as a feature. Non-numeric features are one-hot
encoded with the categories seen in the training split (pandas ``get_dummies``; unseen values encode
as all zeros), then every feature is standardized with training-split statistics (stored in
``Data.info``), following scikit-learn's ``OneHotEncoder(handle_unknown="ignore")`` +
``StandardScaler`` recipe.

Splits: a ``split`` column with values train/val/test assigns rows; otherwise a fixed-seed
``test_fraction`` of rows (stratified for classification when every class has two rows) is the test
split. Validation rows come from ``val`` in the split column or are carved from train with
``split_seed``. Missing values are an error naming the column unless ``dropna=True``.

Text: ``text="review"`` names a text column, tokenized with :func:`reglab.data.text.encode_text_column`
(vocabulary from the training rows only, ``<pad>`` = 0, ``<unk>`` = 1, ``max_len`` tokens,
``min_count``, ``max_vocab``) into ``(N, max_len)`` int64 ids; the data is ``kind="text"`` (for
``model="transformer"``, which reads ``vocab_size`` from ``Data.info``) and uses no other feature.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from ..errors import ReglabError, first_line
from . import register
from .base import Data, Split, carve_validation
from .text import encode_text_column

MAX_CLASSES_AUTO = 50
SPLIT_COLUMN = "split"
SPLIT_VALUES = ("train", "val", "test")


def _column_error(what: str, name: str, columns: list[str]) -> ReglabError:
    close = difflib.get_close_matches(name, columns, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ReglabError(f"csv: {what} '{name}' is not a column (columns: {', '.join(columns)}{hint})")


def _read(path: str) -> tuple[Path, pd.DataFrame]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ReglabError(f"csv: file '{path}' does not exist" if not p.exists() else f"csv: '{path}' is not a file")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise ReglabError(f"csv: cannot read '{path}' ({first_line(err)})") from None
    if df.empty:
        raise ReglabError(f"csv: '{path}' has no data rows (only a header: {', '.join(map(str, df.columns))})")
    df.columns = [str(c) for c in df.columns]
    return p, df


def _is_classification(target: pd.Series, task: str) -> bool:
    numeric = pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target)
    if task == "regression":
        if not numeric:
            raise ReglabError(
                f"csv: task 'regression' needs a numeric target; column '{target.name}' holds "
                f"non-numeric values (e.g. {target.iloc[0]!r}); use task='classification'"
            )
        return False
    if task == "classification" or not numeric:
        return True
    return pd.api.types.is_integer_dtype(target) and target.nunique() <= MAX_CLASSES_AUTO


def _class_ids(target: pd.Series) -> tuple[np.ndarray, list[str]]:
    values = target.unique()
    numeric = pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target)
    ordered = sorted(values) if numeric else sorted(values, key=str)
    codes = pd.Categorical(target, categories=ordered).codes.astype(np.int64)
    return codes, [str(v) for v in ordered]


def _split_roles(column: pd.Series | None, labels: np.ndarray | None, test_fraction: float, n: int) -> np.ndarray:
    """Per-row role "train"/"val"/"test": from the split column, else a fixed-seed test split
    (stratified by ``labels`` when given and every class has two rows)."""
    if column is not None:
        roles = column.astype(str).str.strip().str.lower().to_numpy()
        bad = sorted(set(roles) - set(SPLIT_VALUES))
        if bad:
            raise ReglabError(f"csv: column '{SPLIT_COLUMN}' has values {bad} (allowed: {', '.join(SPLIT_VALUES)})")
        for needed in ("train", "test"):
            if not (roles == needed).any():
                raise ReglabError(f"csv: column '{SPLIT_COLUMN}' has no '{needed}' rows")
        return roles
    from sklearn.model_selection import train_test_split

    rows = np.arange(n)
    stratify = labels if labels is not None and np.bincount(labels).min() >= 2 else None
    try:
        _, test_rows = train_test_split(rows, test_size=test_fraction, random_state=0, stratify=stratify)
    except ValueError:  # too few rows per class for a stratified split of this size
        _, test_rows = train_test_split(rows, test_size=test_fraction, random_state=0)
    roles = np.full(n, "train", dtype=object)
    roles[test_rows] = "test"
    return roles


def _encode(frame: pd.DataFrame, train_rows: np.ndarray) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
    """Numeric columns as floats, others one-hot with the categories of the training rows."""
    blocks, names, one_hot = [], [], {}
    for col in frame.columns:
        s = frame[col]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            blocks.append(s.to_numpy(dtype=np.float64)[:, None])
            names.append(col)
            continue
        text = s.astype(str)
        categories = sorted(text.iloc[train_rows].unique())
        known = text.where(text.isin(categories))  # values unseen in train -> NaN -> all-zero row
        dummies = pd.get_dummies(pd.Categorical(known, categories=categories), prefix=col, prefix_sep="=", dtype=np.float64)
        blocks.append(dummies.to_numpy())
        names.extend(str(c) for c in dummies.columns)
        one_hot[col] = categories
    return np.concatenate(blocks, axis=1), names, one_hot


@register("csv", "a CSV file: tabular classification or regression on a named target column", takes_path=True)
def load_csv(
    path: str,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    target: str | None = None,
    task: Literal["auto", "classification", "regression"] = "auto",
    features: list[str] | None = None,
    standard_error_column: str | None = None,
    test_fraction: float = 0.2,
    dropna: bool = False,
    text: str | None = None,
    max_len: int = 64,
    min_count: int = 2,
    max_vocab: int | None = None,
) -> Data:
    p, df = _read(path)
    columns = list(df.columns)
    if target is None:
        raise ReglabError(f"csv: option 'target' is required: the column to predict (columns: {', '.join(columns)})")
    if target not in columns:
        raise _column_error("target", target, columns)
    se = standard_error_column
    if se is None and "standard_error" in columns and target != "standard_error":
        se = "standard_error"
    if se is not None and se not in columns:
        raise _column_error("standard_error_column", se, columns)
    if se == target:
        raise ReglabError(f"csv: standard_error_column '{se}' is also the target")
    split_col = SPLIT_COLUMN if SPLIT_COLUMN in columns and target != SPLIT_COLUMN else None
    reserved = {target, se, split_col}
    if text is not None:
        if text not in columns:
            raise _column_error("text", text, columns)
        if text in reserved:
            raise ReglabError(f"csv: text column '{text}' is the target, standard-error or split column")
        if features:
            raise ReglabError(f"csv: a text dataset uses only its text column '{text}'; drop option 'features'")
        features = [text]
    if features is None:
        features = [c for c in columns if c not in reserved]
    else:
        for c in features:
            if c not in columns:
                raise _column_error("feature", c, columns)
            if c in reserved:
                raise ReglabError(f"csv: feature '{c}' is the target, standard-error or split column")
    if not features:
        raise ReglabError(f"csv: no feature columns left besides target '{target}' (columns: {', '.join(columns)})")

    used = [target, *([se] if se else []), *features]
    missing = df[used].isna().sum()
    if missing.any():
        if not dropna:
            col = missing[missing > 0].index[0]
            raise ReglabError(
                f"csv: column '{col}' has {int(missing[col])} missing values (pass dropna=true to drop those rows)"
            )
        df = df.dropna(subset=used).reset_index(drop=True)
        if df.empty:
            raise ReglabError("csv: no rows left after dropping rows with missing values")

    classification = _is_classification(df[target], task)
    if classification:
        y_np, classes = _class_ids(df[target])
    else:
        y_np, classes = df[target].to_numpy(dtype=np.float32), []
    y_all = torch.from_numpy(y_np)

    if split_col is None and not 0.0 < test_fraction < 1.0:
        raise ReglabError(f"csv: test_fraction must be in (0, 1), got {test_fraction}")
    roles = _split_roles(df[split_col] if split_col else None, y_np if classification else None, test_fraction, len(df))
    rows = {r: torch.from_numpy(np.flatnonzero(roles == r)) for r in SPLIT_VALUES}
    if len(rows["val"]) == 0:
        train_rows = rows["train"]
        carved_train, carved_val = carve_validation(train_rows, train_rows, val_fraction, split_seed)
        rows["train"], rows["val"] = carved_train.x, carved_val.x
    if len(rows["train"]) == 0:
        raise ReglabError("csv: no training rows")
    extra_all = {"standard_error": torch.from_numpy(df[se].to_numpy(dtype=np.float32))} if se else {}
    if text is not None:
        return _text_data(path, p, df, text, target, rows, y_all, classes, classification, extra_all,
                          max_len, min_count, max_vocab, split_col)

    x_np, names, one_hot = _encode(df[features], rows["train"].numpy())
    mean = x_np[rows["train"].numpy()].mean(axis=0)
    std = x_np[rows["train"].numpy()].std(axis=0)
    std[std == 0] = 1.0
    x_all = torch.from_numpy(((x_np - mean) / std).astype(np.float32))

    def split(r: str) -> Split:
        idx = rows[r]
        return Split(x_all[idx], y_all[idx], extra={k: v[idx] for k, v in extra_all.items()})

    return Data(
        name=f"csv:{path}", task="classification" if classification else "regression",
        train=split("train"), val=split("val"), test=split("test"), input_shape=(x_all.shape[1],),
        classes=classes, mean=None, std=None, kind="tabular",
        info={
            "source": str(p), "target": target, "features": names, "feature_mean": mean.tolist(),
            "feature_std": std.tolist(), "one_hot": one_hot, "standard_error_column": se,
            "split_source": "column" if split_col else "random", "rows": len(df),
        },
    )


def _text_data(path: str, p: Path, df: pd.DataFrame, text: str, target: str, rows: dict, y_all: torch.Tensor,
               classes: list[str], classification: bool, extra_all: dict, max_len: int, min_count: int,
               max_vocab: int | None, split_col: str | None) -> Data:
    """The text-column variant of :func:`load_csv` (see the module docstring)."""
    strings = df[text].astype(str)
    ids, _, info = encode_text_column({r: strings.iloc[rows[r].numpy()].tolist() for r in SPLIT_VALUES},
                                      train="train", max_len=max_len, min_count=min_count, max_size=max_vocab)
    splits = {r: Split(ids[r], y_all[rows[r]], extra={k: v[rows[r]] for k, v in extra_all.items()})
              for r in SPLIT_VALUES}
    info.update(source=str(p), target=target, text_column=text, rows=len(df),
                split_source="column" if split_col else "random")
    return Data(
        name=f"csv:{path}", task="classification" if classification else "regression",
        train=splits["train"], val=splits["val"], test=splits["test"], input_shape=(max_len,),
        classes=classes, mean=None, std=None, kind="text", info=info,
    )
