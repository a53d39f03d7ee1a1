"""The container registry: one SQLite database, ``<root>/registry.db``, shared by processes.

This module owns the durable record of every container (what runc keeps in
``<root>/<id>/state.json``): id, bundle, status, init pid, creation time, annotations, owner,
exit status and the validated config. It does not own the status machine; callers decide which
transitions are legal and write the result here.

The database is in WAL mode so that readers never block the writer, every write is its own
``BEGIN IMMEDIATE`` transaction (taking the write lock up front, so two writers queue on
``busy_timeout`` instead of failing on a lock upgrade), and nothing is cached in memory, so a
restarted controller or a second process sees exactly what is on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from common.clock import now_rfc3339
from common.errors import ConflictError, InvalidArgument, NotFound, ZerovisorError

#: File name of the database inside the root directory.
DB_NAME = "registry.db"
#: Every status a container record may hold (runc's, plus "creating" while create runs).
STATUSES = ("creating", "created", "running", "paused", "stopped")
#: How long a statement waits for another process's write lock before failing.
BUSY_TIMEOUT_MS = 5000
#: Schema version, kept in PRAGMA user_version; bump it with a migration in _MIGRATIONS.
SCHEMA_VERSION = 3
#: Longest container id runc accepts.
MAX_ID_LENGTH = 1024

# runc's own rule (libcontainer validateID): ASCII letters, digits and _ + - . only.
_ID = re.compile(r"[A-Za-z0-9_+\-.]+")
_JSON_COLUMNS = frozenset({"annotations", "config", "started"})

#: Statements that bring a schema of version N (the key) to N + 1.
_MIGRATIONS: dict[int, str] = {
    # Version 1 had an unused pid_file column; it stays, unread.
    1: "ALTER TABLE containers ADD COLUMN started TEXT",
    2: "ALTER TABLE containers ADD COLUMN token TEXT NOT NULL DEFAULT ''",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id          TEXT PRIMARY KEY,
    bundle      TEXT NOT NULL,
    rootfs      TEXT NOT NULL,
    status      TEXT NOT NULL,
    pid         INTEGER,
    created     TEXT NOT NULL,
    annotations TEXT NOT NULL,
    owner       TEXT NOT NULL,
    exit_status INTEGER,
    config      TEXT NOT NULL,
    started     TEXT,
    token       TEXT NOT NULL DEFAULT ''
)
"""


class RegistryError(ZerovisorError):
    """The database itself failed (corrupt, unreadable, locked past the timeout)."""


def current_owner() -> str:
    """The user name of this process's effective uid (runc's "owner"), or the uid itself."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def validate_id(cid: str) -> None:
    """Refuse a container id runc would refuse: it names files, so it must be a safe name."""
    if len(cid) > MAX_ID_LENGTH or cid in (".", "..") or not _ID.fullmatch(cid):
        raise InvalidArgument(
            f"invalid container id {cid[:80]!r}: want 1 to {MAX_ID_LENGTH} of A-Z a-z 0-9 _ + - . and not . or .."
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerRecord:
    """One row of the registry: a container as the controller last recorded it."""

    #: Container id (see validate_id).
    id: str
    #: Absolute host path of the bundle.
    bundle: str
    #: Absolute host path of the root filesystem.
    rootfs: str
    #: One of STATUSES.
    status: str = "creating"
    #: Host pid of the container's init process, once there is one.
    pid: int | None = None
    #: Creation time, RFC 3339 UTC with nanoseconds.
    created: str = field(default_factory=now_rfc3339)
    #: The config's annotations, shown by `state`.
    annotations: dict[str, str] = field(default_factory=dict)
    #: User name of whoever created the container.
    owner: str = field(default_factory=current_owner)
    #: Wait status of init once it exited.
    exit_status: int | None = None
    #: The ContainerSpec as a plain map (common.wire.to_wire).
    config: dict[str, Any] = field(default_factory=dict)
    #: When the start request reached the sentry and completed (a StartRecord as a map), once started.
    started: dict[str, str] | None = None
    #: The token of the create request that made it (CreateArgs.token; "" for none).
    token: str = ""


_COLUMNS = tuple(f.name for f in fields(ContainerRecord))
_MUTABLE = frozenset(_COLUMNS) - {"id"}


class Registry:
    """An open registry database: one SQLite connection, used by one thread.

    Safe to use from several processes at once; each method is atomic on its own.
    """

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn: sqlite3.Connection | None = conn
        #: Absolute path of the database file.
        self.path = path

    @classmethod
    def open(cls, root: str) -> Registry:
        """Open (creating if needed) root/registry.db; root is created mode 0700 if missing."""
        root = os.path.abspath(root)
        if not os.path.isdir(root):
            os.makedirs(root, mode=0o700, exist_ok=True)
            os.chmod(root, 0o700)  # makedirs's mode is filtered by the umask
        path = os.path.join(root, DB_NAME)
        with contextlib.suppress(FileExistsError):
            # Created by hand so that it is private; SQLite gives -wal and -shm the same mode.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as e:
            raise RegistryError(f"opening registry {path}: {e}") from e
        registry = cls(conn, path)
        try:
            registry._setup()
        except BaseException:
            conn.close()
            raise
        return registry

    def _setup(self) -> None:
        conn = self._connection()
        with self._errors("setting up"):
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._enable_wal(conn)
            if mode != "wal":
                raise RegistryError(f"registry {self.path}: cannot use WAL journal mode (got {mode})")
            # FULL: a record acknowledged to the CLI survives a power cut, not only a crash.
            conn.execute("PRAGMA synchronous = FULL")
        with self._write("setting up") as tx:
            version = tx.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RegistryError(
                    f"registry {self.path} has schema {version}, this controller knows {SCHEMA_VERSION}"
                )
            if version == 0:
                tx.execute(_SCHEMA)
            else:
                for step in range(version, SCHEMA_VERSION):
                    tx.execute(_MIGRATIONS[step])
            tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _enable_wal(conn: sqlite3.Connection) -> str:
        """Switch the file to WAL once; returns the journal mode now in force."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                mode: str = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if mode == "wal":
                    return mode
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as e:
                # Two processes creating the database race to switch its journal mode, and the
                # loser gets SQLITE_BUSY at once: busy_timeout does not cover this lock.
                if e.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def close(self) -> None:
        """Close the connection; idempotent."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RegistryError(f"registry {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise RegistryError(f"{action} in registry {self.path}: {e}") from e

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block returns, rolled back if it raises."""
        conn = self._connection()
        with self._errors(action):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def add(self, record: ContainerRecord) -> None:
        """Insert a new container; ConflictError if its id is taken."""
        validate_id(record.id)
        _check_status(record.status)
        row = _to_row(record)
        with self._write(f"adding container {record.id!r}") as tx:
            try:
                tx.execute(
                    f"INSERT INTO containers ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                    [row[c] for c in _COLUMNS],
                )
            except sqlite3.IntegrityError:
                raise ConflictError(f"container {record.id} already exists") from None

    def find(self, cid: str) -> ContainerRecord | None:
        """The container's record, or None."""
        with self._errors(f"reading container {cid!r}"):
            row = self._connection().execute(_select("WHERE id = ?"), (cid,)).fetchone()
        return None if row is None else _from_row(row)

    def get(self, cid: str) -> ContainerRecord:
        """The container's record; NotFound if there is none."""
        record = self.find(cid)
        if record is None:
            raise NotFound(f"container {cid} does not exist")
        return record

    def list(self) -> list[ContainerRecord]:
        """Every container, oldest first."""
        with self._errors("listing containers"):
            rows = self._connection().execute(_select("ORDER BY created, rowid")).fetchall()
        return [_from_row(r) for r in rows]

    def update(self, cid: str, **changes: Any) -> ContainerRecord:
        """Change some columns of one container atomically; returns the updated record."""
        unknown = sorted(set(changes) - _MUTABLE)
        if unknown:
            raise InvalidArgument(f"updating container {cid}: unknown or read-only fields {unknown}")
        if "status" in changes:
            _check_status(changes["status"])
        with self._write(f"updating container {cid!r}") as tx:
            if changes:
                values = [_dump(k, v) if k in _JSON_COLUMNS and v is not None else v for k, v in changes.items()]
                assignments = ", ".join(f"{k} = ?" for k in changes)
                tx.execute(f"UPDATE containers SET {assignments} WHERE id = ?", [*values, cid])
            row = tx.execute(_select("WHERE id = ?"), (cid,)).fetchone()
            if row is None:
                raise NotFound(f"container {cid} does not exist")
        return _from_row(row)

    def remove(self, cid: str) -> None:
        """Forget a container; NotFound if there is none."""
        with self._write(f"removing container {cid!r}") as tx:
            if tx.execute("DELETE FROM containers WHERE id = ?", (cid,)).rowcount == 0:
                raise NotFound(f"container {cid} does not exist")


def _check_status(status: object) -> None:
    if status not in STATUSES:
        raise InvalidArgument(f"invalid container status {status!r}, want one of {', '.join(STATUSES)}")


def _select(tail: str) -> str:
    return f"SELECT {', '.join(_COLUMNS)} FROM containers {tail}"


def _to_row(record: ContainerRecord) -> dict[str, Any]:
    row = {c: getattr(record, c) for c in _COLUMNS}
    for c in _JSON_COLUMNS:
        row[c] = _dump(c, row[c]) if row[c] is not None else None
    return row


def _dump(column: str, value: object) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"container field {column} is not plain JSON: {e}") from None


def _from_row(row: tuple[Any, ...]) -> ContainerRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    for c in _JSON_COLUMNS:
        values[c] = json.loads(values[c]) if values[c] is not None else None
    return ContainerRecord(**values)
