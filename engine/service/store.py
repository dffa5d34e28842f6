"""The job store: one SQLite database (WAL mode) under the service's data folder.

Every state change of a job is one committed transaction, so a ``kill -9`` at any moment
leaves each job in a state it was really in. On start, jobs found ``running`` (their process
died) go back to ``queued`` and run again from the start; ``done`` jobs are never run again
(their result was written atomically before the job was marked done). A job is marked done
at most once: the update only succeeds from ``running`` by the worker that claimed it.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    config TEXT NOT NULL,          -- the StyleConfig changes asked for (JSON)
    batch_key TEXT NOT NULL,       -- jobs with equal keys may run as one batch
    content TEXT NOT NULL,         -- file name inside inputs/ (server-made)
    styles TEXT NOT NULL,          -- JSON list of file names inside inputs/ or styles/
    style_key TEXT NOT NULL,
    blend TEXT,
    idem_key TEXT,
    request_hash TEXT,
    iteration INTEGER NOT NULL DEFAULT 0,
    iters INTEGER NOT NULL DEFAULT 0,
    loss REAL,
    error TEXT,
    result TEXT,                   -- file name inside results/
    attempts INTEGER NOT NULL DEFAULT 0,
    batch INTEGER NOT NULL DEFAULT 0,      -- jobs in its (last) batch
    done_count INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs(owner, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, created);
CREATE TABLE IF NOT EXISTS styles (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    file TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created REAL NOT NULL
);
"""


def new_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """Thread-safe access to the database (one connection, serialised by a lock)."""

    def __init__(self, path):
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, fn):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return out

    def _q(self, sql: str, args: Sequence = ()) -> List[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- recovery ----------------------------------------------------------------------------
    def recover(self) -> int:
        """Jobs left ``running`` by a dead process go back to the queue (or are cancelled if a
        cancel was asked for). Returns how many were requeued."""
        def fn(db):
            db.execute("UPDATE jobs SET status='cancelled', finished=? WHERE status='running' AND cancel_requested=1",
                       (time.time(),))
            return db.execute("UPDATE jobs SET status='queued', iteration=0 WHERE status='running'").rowcount
        return self._tx(fn)

    # -- jobs ----------------------------------------------------------------------------------
    def add_job(self, job: Dict[str, Any]) -> Dict[str, Any]:
        """Insert a job; with an idempotency key already used by the owner, return that job."""
        def fn(db):
            if job.get("idem_key") is not None:
                row = db.execute("SELECT * FROM jobs WHERE owner=? AND idem_key=?",
                                 (job["owner"], job["idem_key"])).fetchone()
                if row is not None:
                    return dict(row), False
            cols = ", ".join(job)
            db.execute(f"INSERT INTO jobs ({cols}) VALUES ({', '.join('?' for _ in job)})", tuple(job.values()))
            return dict(db.execute("SELECT * FROM jobs WHERE id=?", (job["id"],)).fetchone()), True
        return self._tx(fn)

    def find_idempotent(self, owner: str, key: str) -> Optional[Dict[str, Any]]:
        rows = self._q("SELECT * FROM jobs WHERE owner=? AND idem_key=?", (owner, key))
        return dict(rows[0]) if rows else None

    def get(self, job_id: str, owner: Optional[str] = None) -> Optional[Dict[str, Any]]:
        rows = self._q("SELECT * FROM jobs WHERE id=?", (job_id,))
        if not rows or (owner is not None and rows[0]["owner"] != owner):
            return None
        return dict(rows[0])

    def list(self, owner: str, limit: int, offset: int) -> List[Dict[str, Any]]:
        return [dict(r) for r in self._q("SELECT * FROM jobs WHERE owner=? ORDER BY created DESC, id LIMIT ? OFFSET ?",
                                         (owner, limit, offset))]

    def count_owner(self, owner: str, statuses=("queued", "running")) -> int:
        marks = ",".join("?" for _ in statuses)
        return self._q(f"SELECT COUNT(*) FROM jobs WHERE owner=? AND status IN ({marks})", (owner, *statuses))[0][0]

    def counts(self) -> Dict[str, int]:
        out = {s: 0 for s in STATES}
        for r in self._q("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
            out[r[0]] = r[1]
        return out

    def claim(self, max_batch: int) -> List[Dict[str, Any]]:
        """Atomically take the oldest queued job and up to ``max_batch - 1`` queued jobs with
        the same batch key; they become ``running``."""
        def fn(db):
            first = db.execute("SELECT * FROM jobs WHERE status='queued' ORDER BY created, id LIMIT 1").fetchone()
            if first is None:
                return []
            rows = db.execute("SELECT * FROM jobs WHERE status='queued' AND batch_key=? ORDER BY created, id LIMIT ?",
                              (first["batch_key"], max_batch)).fetchall()
            now = time.time()
            for r in rows:
                db.execute("UPDATE jobs SET status='running', started=?, attempts=attempts+1, iteration=0, batch=? "
                           "WHERE id=? AND status='queued'", (now, len(rows), r["id"]))
            return [dict(db.execute("SELECT * FROM jobs WHERE id=?", (r["id"],)).fetchone()) for r in rows]
        return self._tx(fn)

    def progress(self, job_id: str, iteration: int, iters: int, loss: Optional[float]) -> None:
        self._tx(lambda db: db.execute("UPDATE jobs SET iteration=?, iters=?, loss=? WHERE id=? AND status='running'",
                                       (iteration, iters, loss, job_id)))

    def finish(self, job_id: str, status: str, *, result: Optional[str] = None, error: Optional[str] = None,
               loss: Optional[float] = None, iteration: Optional[int] = None) -> bool:
        """running -> done/failed/cancelled; False if the job was not running (nothing changed)."""
        assert status in FINAL

        def fn(db):
            n = db.execute(
                "UPDATE jobs SET status=?, finished=?, result=?, error=?, loss=COALESCE(?, loss), "
                "iteration=COALESCE(?, iteration), done_count=done_count+(?='done') WHERE id=? AND status='running'",
                (status, time.time(), result, error, loss, iteration, status, job_id)).rowcount
            return n == 1
        return self._tx(fn)

    def requeue(self, job_id: str) -> None:
        """running -> queued (its batch was stopped for another job, or the server is stopping)."""
        self._tx(lambda db: db.execute("UPDATE jobs SET status='queued', iteration=0 WHERE id=? AND status='running'",
                                       (job_id,)))

    def cancel(self, job_id: str) -> Optional[str]:
        """Cancel: a queued job is cancelled now; a running one is flagged (its worker stops it
        at the next iteration). Returns the status after the call."""
        def fn(db):
            row = db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                return None
            if row["status"] == "queued":
                db.execute("UPDATE jobs SET status='cancelled', finished=? WHERE id=?", (time.time(), job_id))
                return "cancelled"
            if row["status"] == "running":
                db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
            return row["status"]
        return self._tx(fn)

    def cancel_requested(self, job_ids: Sequence[str]) -> List[str]:
        if not job_ids:
            return []
        marks = ",".join("?" for _ in job_ids)
        return [r[0] for r in self._q(f"SELECT id FROM jobs WHERE cancel_requested=1 AND id IN ({marks})", tuple(job_ids))]

    # -- styles --------------------------------------------------------------------------------
    def add_style(self, style: Dict[str, Any]) -> Dict[str, Any]:
        def fn(db):
            cols = ", ".join(style)
            db.execute(f"INSERT INTO styles ({cols}) VALUES ({', '.join('?' for _ in style)})", tuple(style.values()))
            return style
        return self._tx(fn)

    def get_style(self, style_id: str, owner: str) -> Optional[Dict[str, Any]]:
        rows = self._q("SELECT * FROM styles WHERE id=? AND owner=?", (style_id, owner))
        return dict(rows[0]) if rows else None

    def list_styles(self, owner: str) -> List[Dict[str, Any]]:
        return [dict(r) for r in self._q("SELECT * FROM styles WHERE owner=? ORDER BY created", (owner,))]


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
