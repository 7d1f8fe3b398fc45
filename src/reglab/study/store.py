"""The results store: one SQLite file per study folder (``results.sqlite``).

Tables:

- ``studies(name, spec, created)``: the validated study spec as JSON;
- ``runs(study, config_key, seed, label, status, config, metrics, history, trajectory, checkpoint,
  seconds, group_size, device, started, finished, error)``: one row per (configuration, seed);
  ``status`` is ``running`` until the run's final metrics are written (``done``) or it fails;
- ``epochs(study, config_key, seed, epoch, metrics)``: every epoch's record as soon as it exists.

Every write is its own transaction (SQLite's journal makes it atomic), so a killed process leaves
the store consistent: finished runs stay finished, and nothing recorded is lost. Only the driver
process writes; workers send their records to it.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    study TEXT NOT NULL, config_key TEXT NOT NULL, seed INTEGER NOT NULL, label TEXT NOT NULL,
    status TEXT NOT NULL, config TEXT NOT NULL, metrics TEXT, history TEXT, trajectory TEXT,
    checkpoint TEXT, seconds REAL, group_size INTEGER, device TEXT, started REAL, finished REAL, error TEXT,
    PRIMARY KEY (study, config_key, seed));
CREATE TABLE IF NOT EXISTS epochs (
    study TEXT NOT NULL, config_key TEXT NOT NULL, seed INTEGER NOT NULL, epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL, PRIMARY KEY (study, config_key, seed, epoch));
"""


def _json(value: Any) -> str:
    """JSON with non-finite floats kept (as strings JSON understands: NaN/Infinity)."""
    return json.dumps(value, allow_nan=True)


@dataclass
class StoredRun:
    config_key: str
    seed: int
    label: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, float]
    history: list[dict[str, float]]
    trajectory: dict[str, list[float]]
    checkpoint: str | None
    seconds: float | None
    group_size: int | None
    device: str | None


class Store:
    """SQLite-backed results of the studies in one folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60)
        try:
            with db:  # commit on success, roll back on error
                yield db
        finally:
            db.close()

    # ---- writes --------------------------------------------------------------------------------
    def save_study(self, name: str, spec: dict[str, Any]) -> None:
        with self._connect() as db:
            db.execute("INSERT INTO studies VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET spec = excluded.spec",
                       (name, _json(spec), time.time()))

    def start_run(self, study: str, key: str, seed: int, label: str, config: dict[str, Any], device: str) -> None:
        with self._connect() as db:
            db.execute(
                """INSERT INTO runs (study, config_key, seed, label, status, config, device, started)
                   VALUES (?, ?, ?, ?, 'running', ?, ?, ?)
                   ON CONFLICT(study, config_key, seed) DO UPDATE SET status = 'running', label = excluded.label,
                   device = excluded.device, error = NULL""",
                (study, key, seed, label, _json(config), device, time.time()),
            )

    def add_epoch(self, study: str, key: str, seed: int, record: dict[str, float]) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?, ?)",
                       (study, key, seed, int(record["epoch"]), _json(record)))

    def finish_run(self, study: str, key: str, result: Any) -> None:
        """Store a :class:`~reglab.engine.run.RunResult` as done (with its full history)."""
        m = result.metrics
        with self._connect() as db:
            db.execute(
                """UPDATE runs SET status = 'done', metrics = ?, history = ?, trajectory = ?, checkpoint = ?,
                   seconds = ?, group_size = ?, finished = ? WHERE study = ? AND config_key = ? AND seed = ?""",
                (_json(m), _json(result.history), _json(result.trajectory), result.checkpoint, m.get("seconds"),
                 m.get("group_size"), time.time(), study, key, result.seed),
            )
            db.executemany("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?, ?)",
                           [(study, key, result.seed, int(r["epoch"]), _json(r)) for r in result.history])

    def fail_run(self, study: str, key: str, seed: int, error: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET status = 'failed', error = ? WHERE study = ? AND config_key = ? AND seed = ?",
                       (error, study, key, seed))

    # ---- reads ---------------------------------------------------------------------------------
    def studies(self) -> list[str]:
        with self._connect() as db:
            return [name for (name,) in db.execute("SELECT name FROM studies ORDER BY created")]

    def study_spec(self, name: str | None = None) -> dict[str, Any] | None:
        with self._connect() as db:
            if name is None:
                row = db.execute("SELECT spec FROM studies ORDER BY created DESC LIMIT 1").fetchone()
            else:
                row = db.execute("SELECT spec FROM studies WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def done(self, study: str) -> set[tuple[str, int]]:
        with self._connect() as db:
            rows = db.execute("SELECT config_key, seed FROM runs WHERE study = ? AND status = 'done'", (study,))
            return {(k, s) for k, s in rows}

    def runs(self, study: str, status: str | None = "done") -> list[StoredRun]:
        query = "SELECT config_key, seed, label, status, config, metrics, history, trajectory, checkpoint, seconds, " \
                "group_size, device FROM runs WHERE study = ?"
        args: tuple = (study,)
        if status is not None:
            query += " AND status = ?"
            args += (status,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY config_key, seed", args).fetchall()
        out = []
        for key, seed, label, st, config, metrics, history, trajectory, ckpt, seconds, group, device in rows:
            out.append(StoredRun(key, seed, label, st, json.loads(config), json.loads(metrics or "{}"),
                                 json.loads(history or "[]"), json.loads(trajectory or "{}"), ckpt, seconds, group, device))
        return out
