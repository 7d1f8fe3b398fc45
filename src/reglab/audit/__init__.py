"""Data audit: near-duplicate search and fuzzy record linkage.

* :mod:`reglab.audit.duplicates` -- random-hyperplane LSH (Charikar 2002) with multi-probe for
  near-duplicates between train and test (leakage) or within one set, confirmed by exact cosine.
* :mod:`reglab.audit.neighbors` -- approximate cosine k-nearest neighbours from the same LSH index,
  with recall against scikit-learn's exact search.
* :mod:`reglab.audit.link` -- pairwise string-similarity classifier with one-to-one matching and
  abstention, evaluated by cross-validation against a Levenshtein-threshold baseline.
The ``reglab audit duplicates|link`` commands are :mod:`reglab.cli.audit`.
"""
from __future__ import annotations

from .duplicates import Duplicates, exact_duplicates, find_duplicates, recall, save_pair_grid, unit_rows
from .neighbors import CosineIndex, Neighbors, exact_neighbors, knn_recall

__all__ = ["Duplicates", "find_duplicates", "exact_duplicates", "recall", "save_pair_grid", "unit_rows",
           "CosineIndex", "Neighbors", "exact_neighbors", "knn_recall"]
