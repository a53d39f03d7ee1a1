"""clone_process and the namespace tables (services.platform.clone).

clone in a threaded pytest worker is unsafe, so every clone runs in a single-threaded
subprocess that reports what parent and child saw as JSON.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from services.platform import clone

REPO = Path(__file__).resolve().parents[3]

#: Clones a child with the flags in argv[1]; the child reports over a pipe and exits 5. With
#: CLONE_NEWUTS the child also sets its hostname, which must not reach the parent's.
PROBE = textwrap.dedent(
    """
    import json, os, socket, sys
    from services.platform.clone import CLONE_NEWUTS, clone_process
    from services.platform.linux import sethostname

    hooks = []
    os.register_at_fork(before=lambda: hooks.append("before"), after_in_parent=lambda: hooks.append("parent"),
                        after_in_child=lambda: hooks.append("child"))
    r, w = os.pipe()
    try:
        pid = clone_process(int(sys.argv[1]))
    except OSError as e:
        print(json.dumps({"errno": e.errno, "hooks": hooks}))
        sys.exit(0)
    if pid == 0:
        os.close(r)
        out = {"pid": os.getpid(), "hooks": hooks}
        if int(sys.argv[1]) & CLONE_NEWUTS:  # never without: it would rename the host
            sethostname("cloned-child")
            out["hostname"] = socket.gethostname()
        os.write(w, json.dumps(out).encode())
        os._exit(5)
    os.close(w)
    child = json.loads(os.read(r, 65536))
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"pid": pid, "exit_code": os.waitstatus_to_exitcode(status), "child": child,
                      "hooks": hooks, "hostname": socket.gethostname()}))
    """
)


def probe(flags: int) -> dict[str, Any]:
    """Run PROBE with flags in a subprocess; its report."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(flags)], capture_output=True, text=True, timeout=60, cwd=REPO, check=True
    )
    return dict(json.loads(proc.stdout))


def test_plain_clone_is_fork() -> None:
    report = probe(0)
    assert report["exit_code"] == 5
    assert report["child"]["pid"] == report["pid"]
    assert report["hooks"] == ["before", "parent"]
    assert report["child"]["hooks"] == ["before", "child"]


def test_new_pid_and_uts_namespaces() -> None:
    report = probe(clone.CLONE_NEWPID | clone.CLONE_NEWUTS)
    assert report["exit_code"] == 5
    assert report["child"]["pid"] == 1
    assert report["pid"] > 1
    assert report["child"]["hostname"] == "cloned-child"
    assert report["hostname"] != "cloned-child"


def test_every_oci_namespace_at_once() -> None:
    report = probe(clone.namespace_flags(list(clone.NAMESPACE_FLAGS)))
    assert report["exit_code"] == 5
    assert report["child"]["pid"] == 1


def test_failure_is_oserror_with_errno() -> None:
    # CLONE_SIGHAND without CLONE_VM is invalid.
    report = probe(0x00000800)
    assert report["errno"] == errno.EINVAL
    assert report["hooks"] == ["before", "parent"]


def test_namespace_table() -> None:
    assert set(clone.NAMESPACE_FLAGS) == {"mount", "uts", "ipc", "user", "pid", "network", "cgroup"}
    assert clone.namespace_flags(["pid", "mount"]) == clone.CLONE_NEWPID | clone.CLONE_NEWNS
    assert clone.namespace_flags([]) == 0
    for flag in clone.NAMESPACE_FLAGS.values():
        assert flag & clone.CLONE_NAMESPACES == flag


def test_unknown_namespace_name() -> None:
    with pytest.raises(ValueError, match="unknown namespace type 'time'"):
        clone.namespace_flags(["time"])
