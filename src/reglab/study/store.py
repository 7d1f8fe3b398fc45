"""The results store: one SQLite file per study folder (``results.sqlite``), holding one study.

Runs are keyed by (resolved configuration, seed), not by the study definition, so a study that is
edited and run again in the same folder reuses every finished run whose configuration and seed are
unchanged, and one given more seeds trains only the new ones. Tables:

- ``meta(key, value)``: the store's format version and the name of the study it holds;
- ``definitions(hash, name, spec, first_seen, last_seen)``: every study definition run in this
  folder (the latest one is what ``reglab report`` renders);
- ``runs(config_key, seed, label, status, config, metrics, history, trajectory, checkpoint, seconds,
  group_size, device, threads, started, finished, error)``: one row per (configuration, seed);
  ``status`` is ``running`` until the run's final metrics are written (``done``, or ``diverged`` when
  its training loss stopped being finite) or it fails (``failed``);
- ``epochs(config_key, seed, epoch, metrics)``: every epoch's record as soon as it exists;
- ``decisions(config_key, grouped, reason)``: whether a configuration's seeds trained stacked;
- ``invocations(started, definition, planned, reused, trained, machine, seconds)``: what each
  ``reglab study`` found finished, what it trained, on which machine and in how long.

Every write is its own transaction (SQLite's journal makes it atomic), so a killed process leaves
the store consistent: finished runs stay finished, and nothing recorded is lost. Only the driver
process writes; workers send their records to it. JSON is strict: NaN and infinities are ``null``
(read back as NaN).
"""
from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import dumps
from ..errors import ReglabError

#: bump when the tables change; an older store is refused with a one-line error
FORMAT = "3"
FINISHED = ("done", "diverged")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS definitions (
    hash TEXT PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    config_key TEXT NOT NULL, seed INTEGER NOT NULL, label TEXT NOT NULL, status TEXT NOT NULL,
    config TEXT NOT NULL, metrics TEXT, history TEXT, trajectory TEXT, checkpoint TEXT, seconds REAL,
    group_size INTEGER, device TEXT, threads INTEGER, started REAL, finished REAL, error TEXT,
    PRIMARY KEY (config_key, seed));
CREATE TABLE IF NOT EXISTS epochs (
    config_key TEXT NOT NULL, seed INTEGER NOT NULL, epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (config_key, seed, epoch));
CREATE TABLE IF NOT EXISTS decisions (config_key TEXT PRIMARY KEY, grouped INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS invocations (
    started REAL NOT NULL, definition TEXT NOT NULL, planned INTEGER NOT NULL, reused INTEGER NOT NULL,
    trained INTEGER NOT NULL, machine TEXT NOT NULL, seconds REAL NOT NULL);
"""


def _nan(value: Any) -> Any:
    """JSON ``null`` (a non-finite float when written) back to NaN inside metric records."""
    if isinstance(value, dict):
        return {k: _nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan(v) for v in value]
    return math.nan if value is None else value


def definition_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


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
    threads: int | None

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"


class Store:
    """SQLite-backed results of the study in one folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "studies" in tables:
                raise ReglabError(f"{self.path}: a results store of an older reglab (format 1); "
                                  "run the study into a new --out folder")
            db.executescript(f"BEGIN; {SCHEMA} INSERT OR IGNORE INTO meta VALUES ('format', '{FORMAT}'); COMMIT;")
            found = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0]
        if found != FORMAT:
            raise ReglabError(f"{self.path}: results store format {found} is not this reglab's ({FORMAT}); "
                              "run the study into a new --out folder")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60)
        try:
            with db:  # commit on success, roll back on error
                yield db
        finally:
            db.close()

    # ---- the study --------------------------------------------------------------------------------
    def study_name(self) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'study'").fetchone()
        return row[0] if row else None

    def save_definition(self, name: str, spec: dict[str, Any]) -> str:
        """Record a definition of study ``name`` (this folder holds one study); returns its hash."""
        held = self.study_name()
        if held is not None and held != name:
            raise ReglabError(f"{self.path.parent}: holds study '{held}', not '{name}'; use another --out for this one")
        digest, now = definition_hash(spec), time.time()
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('study', ?)", (name,))
            db.execute("""INSERT INTO definitions VALUES (?, ?, ?, ?, ?)
                          ON CONFLICT(hash) DO UPDATE SET last_seen = excluded.last_seen""",
                       (digest, name, dumps(spec), now, now))
        return digest

    def definition(self) -> dict[str, Any] | None:
        """The study definition run most recently in this folder."""
        with self._connect() as db:
            row = db.execute("SELECT spec FROM definitions ORDER BY last_seen DESC LIMIT 1").fetchone()
        return json.loads(row[0]) if row else None

    def definitions(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM definitions").fetchone()[0]

    def record_invocation(self, definition: str, planned: int, reused: int, trained: int, machine: str,
                          seconds: float) -> None:
        with self._connect() as db:
            db.execute("INSERT INTO invocations VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (time.time(), definition, planned, reused, trained, machine, seconds))

    def last_invocation(self) -> dict[str, Any] | None:
        """The planned / reused / trained run counts of the latest ``reglab study`` in this folder."""
        with self._connect() as db:
            row = db.execute("SELECT planned, reused, trained FROM invocations ORDER BY started DESC LIMIT 1").fetchone()
        return dict(zip(("planned", "reused", "trained"), row)) if row else None

    def invocations(self) -> list[dict[str, Any]]:
        """Every ``reglab study`` run in this folder: when, counts, machine, wall seconds."""
        with self._connect() as db:
            rows = db.execute("SELECT started, planned, reused, trained, machine, seconds FROM invocations ORDER BY started")
            return [dict(zip(("started", "planned", "reused", "trained", "machine", "seconds"), r)) for r in rows]

    # ---- runs ----------------------------------------------------------------------------------
    def start_run(self, key: str, seed: int, label: str, config: dict[str, Any], device: str, threads: int) -> None:
        with self._connect() as db:
            db.execute(
                """INSERT INTO runs (config_key, seed, label, status, config, device, threads, started)
                   VALUES (?, ?, ?, 'running', ?, ?, ?, ?)
                   ON CONFLICT(config_key, seed) DO UPDATE SET status = 'running', label = excluded.label,
                   device = excluded.device, threads = excluded.threads, error = NULL""",
                (key, seed, label, dumps(config), device, threads, time.time()),
            )

    def add_epoch(self, key: str, seed: int, record: dict[str, float]) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?)", (key, seed, int(record["epoch"]), dumps(record)))

    def finish_run(self, key: str, result: Any) -> None:
        """Store a :class:`~reglab.engine.run.RunResult` as done or diverged (with its full history)."""
        m = result.metrics
        status = "diverged" if m.get("diverged") else "done"
        with self._connect() as db:
            db.execute(
                """UPDATE runs SET status = ?, metrics = ?, history = ?, trajectory = ?, checkpoint = ?,
                   seconds = ?, group_size = ?, finished = ? WHERE config_key = ? AND seed = ?""",
                (status, dumps(m), dumps(result.history), dumps(result.trajectory), result.checkpoint, m.get("seconds"),
                 m.get("group_size"), time.time(), key, result.seed),
            )
            db.executemany("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?)",
                           [(key, result.seed, int(r["epoch"]), dumps(r)) for r in result.history])

    def fail_run(self, key: str, seed: int, error: str) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET status = 'failed', error = ? WHERE config_key = ? AND seed = ?", (error, key, seed))

    def record_decision(self, key: str, grouped: bool, reason: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?)", (key, int(grouped), reason))

    # ---- reads ---------------------------------------------------------------------------------
    def finished(self) -> set[tuple[str, int]]:
        """(configuration key, seed) of every finished run (done or diverged)."""
        with self._connect() as db:
            rows = db.execute(f"SELECT config_key, seed FROM runs WHERE status IN {FINISHED}")
            return {(k, s) for k, s in rows}

    def runs(self, keys: set[str] | None = None) -> list[StoredRun]:
        """Finished runs (of the configurations ``keys``, or all), ordered by key and seed."""
        if isinstance(keys, str):
            raise TypeError("keys: a set of configuration keys, not one string")
        query = ("SELECT config_key, seed, label, status, config, metrics, history, trajectory, checkpoint, seconds, "
                 f"group_size, device, threads FROM runs WHERE status IN {FINISHED} ORDER BY config_key, seed")
        with self._connect() as db:
            rows = db.execute(query).fetchall()
        out = []
        for key, seed, label, st, config, metrics, history, trajectory, ckpt, seconds, group, device, threads in rows:
            if keys is not None and key not in keys:
                continue
            out.append(StoredRun(key, seed, label, st, json.loads(config), _nan(json.loads(metrics or "{}")),
                                 _nan(json.loads(history or "[]")), _nan(json.loads(trajectory or "{}")), ckpt, seconds,
                                 group, device, threads))
        return out

    def statuses(self) -> dict[tuple[str, int], str]:
        """The status of every run in the store: running, done, diverged or failed."""
        with self._connect() as db:
            return {(k, s): st for k, s, st in db.execute("SELECT config_key, seed, status FROM runs")}

    def decisions(self) -> dict[str, tuple[bool, str]]:
        with self._connect() as db:
            return {k: (bool(g), r) for k, g, r in db.execute("SELECT config_key, grouped, reason FROM decisions")}
