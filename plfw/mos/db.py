"""Ratings storage: one SQLite file inside the study folder, safe against kills and concurrency.

WAL journal mode with ``synchronous=FULL``: a rating is on disk when its request returns, a killed
server loses nothing that was acknowledged, and readers (the report) never block writers. Each
call opens its own short-lived connection, so threads of the HTTP server share no connection
object; SQLite's locking (with a busy timeout) serialises the writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS raters (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS ratings (
    rater_id   INTEGER NOT NULL REFERENCES raters(id),
    item       TEXT NOT NULL,
    phase      TEXT NOT NULL CHECK (phase IN ('main', 'calibration')),
    score      INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    elapsed_ms INTEGER,
    created    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (rater_id, item)
);
"""


@dataclass(frozen=True)
class Rating:
    rater: str
    item: str
    phase: str
    score: int
    elapsed_ms: int | None
    created: str


class RatingsDB:
    """The study's ``ratings.sqlite``; creating the object creates the tables if needed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        finally:
            conn.close()

    def rater(self, name: str) -> tuple[int, int]:
        """(rater id, join index from 0) for ``name``, registering a new rater on first use."""
        with self._connect() as conn:
            row = conn.execute("SELECT id FROM raters WHERE name = ?", (name,)).fetchone()
            if row is None:  # only a real insert pays for a synced write
                conn.execute("INSERT INTO raters (name) VALUES (?) ON CONFLICT DO NOTHING", (name,))
                row = conn.execute("SELECT id FROM raters WHERE name = ?", (name,)).fetchone()
            (rid,) = row
            (index,) = conn.execute("SELECT COUNT(*) FROM raters WHERE id < ?", (rid,)).fetchone()
        return rid, index

    def find_rater(self, name: str) -> int | None:
        """The id of a registered rater, or None (never registers)."""
        with self._connect() as conn:
            row = conn.execute("SELECT id FROM raters WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def rated(self, rater_id: int) -> set[str]:
        """Ids of the items this rater has rated (any phase)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT item FROM ratings WHERE rater_id = ?", (rater_id,))
            return {item for (item,) in rows}

    def add(self, rater_id: int, item: str, phase: str, score: int,
            elapsed_ms: int | None = None) -> bool:
        """Store one rating, committed before returning. A second rating of the same item by the
        same rater (a double click, a resent request) is ignored: returns False."""
        with self._connect() as conn:
            cur = conn.execute(
                "INSERT INTO ratings (rater_id, item, phase, score, elapsed_ms) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (rater_id, item) DO NOTHING",
                (rater_id, item, phase, score, elapsed_ms))
            return cur.rowcount == 1

    def all(self) -> list[Rating]:
        """Every rating, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT r.name, t.item, t.phase, t.score, t.elapsed_ms, t.created FROM ratings t "
                "JOIN raters r ON r.id = t.rater_id ORDER BY t.created, t.rowid").fetchall()
        return [Rating(*row) for row in rows]
