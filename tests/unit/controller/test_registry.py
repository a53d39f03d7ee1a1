"""The container registry: a real SQLite file under tmp_path, reopened and shared by processes."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.clock import now_rfc3339
from common.errors import ConflictError, InvalidArgument, NotFound
from services.controller import registry as registry_module
from services.controller.registry import (
    ContainerRecord,
    Registry,
    RegistryError,
    validate_id,
)
from tests.conftest import REPO


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def reg(root: Path) -> Iterator[Registry]:
    registry = Registry.open(str(root))
    yield registry
    registry.close()


def record(cid: str, **fields: Any) -> ContainerRecord:
    return ContainerRecord(id=cid, bundle=f"/bundles/{cid}", rootfs=f"/bundles/{cid}/rootfs", **fields)


def test_open_creates_a_private_root_and_database(root: Path) -> None:
    with Registry.open(str(root)) as reg:
        assert reg.path == str(root / "registry.db")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "registry.db").stat().st_mode) == 0o600


def test_wal_and_busy_timeout(reg: Registry, root: Path) -> None:
    conn = reg._connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    # WAL is a property of the file, so a plain connection sees it too.
    other = sqlite3.connect(root / "registry.db")
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_round_trip(reg: Registry) -> None:
    rec = record(
        "c1",
        status="running",
        pid=4242,
        annotations={"org.example/a": "b"},
        owner="alice",
        exit_status=None,
        config={"process": {"args": ["sh", "-c", "echo hi"]}, "namespaces": ["pid"]},
        started={"request_received": "2026-01-01T00:00:00.000000000Z", "request_completed": "2026-01-01T00:00:01.0Z"},
    )
    reg.add(rec)
    assert reg.get("c1") == rec
    assert reg.find("c1") == rec


def test_defaults() -> None:
    rec = record("c1")
    assert rec.status == "creating"
    assert rec.pid is None
    assert rec.exit_status is None
    assert rec.owner
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", rec.created)


def test_created_is_utc_now_with_nanoseconds() -> None:
    before = time.time()
    stamp = now_rfc3339()
    seconds = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(seconds - before) < 5
    assert now_rfc3339() >= stamp


def test_duplicate_id_conflicts(reg: Registry) -> None:
    reg.add(record("c1"))
    with pytest.raises(ConflictError, match="^container c1 already exists$"):
        reg.add(record("c1", status="created"))
    assert reg.get("c1").status == "creating"


def test_missing_container(reg: Registry) -> None:
    assert reg.find("nope") is None
    with pytest.raises(NotFound, match="^container nope does not exist$"):
        reg.get("nope")
    with pytest.raises(NotFound, match="^container nope does not exist$"):
        reg.update("nope", status="running")
    with pytest.raises(NotFound, match="^container nope does not exist$"):
        reg.remove("nope")


def test_list_is_ordered_by_created(reg: Registry) -> None:
    reg.add(record("b", created="2026-01-01T00:00:02.000000000Z"))
    reg.add(record("a", created="2026-01-01T00:00:03.000000000Z"))
    reg.add(record("c", created="2026-01-01T00:00:01.000000000Z"))
    assert [r.id for r in reg.list()] == ["c", "b", "a"]


def test_list_empty(reg: Registry) -> None:
    assert reg.list() == []


def test_update(reg: Registry) -> None:
    reg.add(record("c1"))
    updated = reg.update("c1", status="running", pid=77, annotations={"k": "v"})
    assert (updated.status, updated.pid, updated.annotations) == ("running", 77, {"k": "v"})
    assert reg.get("c1") == updated
    stopped = reg.update("c1", status="stopped", exit_status=256, pid=None)
    assert (stopped.status, stopped.exit_status, stopped.pid) == ("stopped", 256, None)
    assert reg.update("c1") == stopped


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": "other"}, "unknown or read-only fields \\['id'\\]"),
        ({"colour": "red"}, "unknown or read-only fields \\['colour'\\]"),
        ({"status": "exploded"}, "invalid container status 'exploded'"),
        ({"config": {"x": object()}}, "container field config is not plain JSON"),
    ],
)
def test_update_rejections(reg: Registry, changes: dict[str, object], message: str) -> None:
    reg.add(record("c1"))
    with pytest.raises(InvalidArgument, match=message):
        reg.update("c1", **changes)
    assert reg.get("c1").status == "creating"


def test_add_rejections(reg: Registry) -> None:
    with pytest.raises(InvalidArgument, match="invalid container id"):
        reg.add(record("bad/id"))
    with pytest.raises(InvalidArgument, match="invalid container status"):
        reg.add(record("c1", status="zombie"))
    assert reg.list() == []


def test_remove(reg: Registry) -> None:
    reg.add(record("c1"))
    reg.add(record("c2"))
    reg.remove("c1")
    assert [r.id for r in reg.list()] == ["c2"]
    assert reg.find("c1") is None


def test_closed_registry_refuses(root: Path) -> None:
    reg = Registry.open(str(root))
    reg.close()
    reg.close()  # idempotent
    with pytest.raises(RegistryError, match="is closed"):
        reg.list()


def test_survives_reopen(root: Path) -> None:
    with Registry.open(str(root)) as reg:
        reg.add(record("c1", config={"rootfs": "/x"}))
        reg.add(record("c2"))
        reg.update("c1", status="running", pid=10)
        reg.remove("c2")
    with Registry.open(str(root)) as reg:
        rec = reg.get("c1")
        assert (rec.status, rec.pid, rec.config) == ("running", 10, {"rootfs": "/x"})
        assert [r.id for r in reg.list()] == ["c1"]


def test_two_registries_see_each_other(root: Path) -> None:
    with Registry.open(str(root)) as one, Registry.open(str(root)) as two:
        one.add(record("c1"))
        assert two.get("c1").id == "c1"
        two.update("c1", status="created")
        assert one.get("c1").status == "created"


def test_corrupt_database_is_reported(root: Path) -> None:
    root.mkdir(mode=0o700)
    (root / "registry.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match="registry .*registry.db"):
        Registry.open(str(root))


def test_version_1_database_gains_the_started_column(root: Path) -> None:
    root.mkdir(mode=0o700)
    conn = sqlite3.connect(root / "registry.db")
    conn.execute(
        "CREATE TABLE containers (id TEXT PRIMARY KEY, bundle TEXT NOT NULL, rootfs TEXT NOT NULL,"
        " status TEXT NOT NULL, pid INTEGER, created TEXT NOT NULL, annotations TEXT NOT NULL,"
        " owner TEXT NOT NULL, exit_status INTEGER, config TEXT NOT NULL, pid_file TEXT)"
    )
    conn.execute(
        "INSERT INTO containers VALUES ('old', '/b', '/b/rootfs', 'stopped', NULL,"
        " '2026-01-01T00:00:00.000000000Z', '{}', 'root', 0, '{}', NULL)"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Registry.open(str(root)) as reg:
        assert reg.get("old").started is None
        stamp = {"request_received": "a", "request_completed": "b"}
        assert reg.update("old", started=stamp).started == stamp


def test_newer_schema_is_refused(root: Path) -> None:
    Registry.open(str(root)).close()
    conn = sqlite3.connect(root / "registry.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RegistryError, match="has schema 99"):
        Registry.open(str(root))


def test_writer_waits_for_a_lock_held_briefly(reg: Registry, root: Path) -> None:
    other = sqlite3.connect(root / "registry.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    timer.start()
    try:
        started = time.monotonic()
        reg.add(record("c1"))
        assert time.monotonic() - started >= 0.2
    finally:
        timer.join()
        other.close()
    assert reg.get("c1").id == "c1"


def test_writer_gives_up_after_busy_timeout(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "BUSY_TIMEOUT_MS", 100)
    with Registry.open(str(root)) as reg:
        other = sqlite3.connect(root / "registry.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(RegistryError, match="adding container 'c1' in registry .*: database is locked"):
                reg.add(record("c1"))
        finally:
            other.execute("ROLLBACK")
            other.close()
        reg.add(record("c1"))


WRITER = """
import sys
from common.errors import ConflictError
from services.controller.registry import ContainerRecord, Registry

root, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.stdin.readline()  # the parent releases both writers at once
with Registry.open(root) as reg:
    try:
        reg.add(ContainerRecord(id="shared", bundle="/b", rootfs="/b/rootfs", owner=prefix))
        print("won")
    except ConflictError:
        print("lost")
    for i in range(count):
        cid = f"{prefix}-{i}"
        reg.add(ContainerRecord(id=cid, bundle="/b", rootfs="/b/rootfs"))
        reg.update(cid, status="created", pid=i)
        reg.update("shared", annotations={"last": cid})
"""


def test_two_processes_write_concurrently(root: Path) -> None:
    count = 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), prefix, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for prefix in ("p", "q")
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes.append(out.strip())
    assert sorted(outcomes) == ["lost", "won"]
    with Registry.open(str(root)) as reg:
        records = {r.id: r for r in reg.list()}
    assert len(records) == 2 * count + 1
    for prefix in ("p", "q"):
        for i in range(count):
            assert (records[f"{prefix}-{i}"].status, records[f"{prefix}-{i}"].pid) == ("created", i)
    winner = "p" if outcomes[0] == "won" else "q"
    assert records["shared"].owner == winner
    assert records["shared"].annotations["last"] in {f"p-{count - 1}", f"q-{count - 1}"}


@pytest.mark.parametrize("cid", ["a", "c1", "my_container-1.2+b", "A" * 1024, "..a", "a.."])
def test_valid_ids(cid: str) -> None:
    validate_id(cid)


@pytest.mark.parametrize(
    "cid",
    ["", ".", "..", "a/b", "a b", "a\n", "a,b", "é", "a:b", "A" * 1025, "../x", "a\0"],
    ids=["empty", "dot", "dotdot", "slash", "space", "newline", "comma", "unicode", "colon", "long", "up", "nul"],
)
def test_invalid_ids(cid: str) -> None:
    with pytest.raises(InvalidArgument, match="^invalid container id"):
        validate_id(cid)
