"""The seccomp filter (services.platform.filters): built here, loaded in throwaway children.

A filter cannot be unloaded, and fork in a threaded pytest worker is unsafe, so every load
happens in a child forked by a single-threaded subprocess, which reports what the filtered
child saw as JSON.
"""

from __future__ import annotations

import errno
import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from services.platform import filters
from services.platform.filters import (
    DEFAULT_POLICY,
    DENIED_SYSCALLS,
    TRAPPED_SYSCALLS,
    UNTRAPPED_POLICY,
    FilterPolicy,
    build_filter,
    export_pfc,
    load_filter,
)

REPO = Path(__file__).resolve().parents[3]

#: Forks a child that loads the default filter, tries system calls and reports their errnos.
PROBE = textwrap.dedent(
    """
    import ctypes, json, mmap, os, sys
    from services.platform.filters import FilterPolicy, build_filter, load_filter, SECCOMP_FILTER_FLAG_NEW_LISTENER
    from services.platform.clone import CLONE_NEWNS, CLONE_NEWUSER
    from common.libc import libc

    def call(nr, *args):
        ret = libc.syscall(nr, *args)
        return 0 if ret != -1 else ctypes.get_errno()

    mode = sys.argv[1]
    bpf = build_filter(FilterPolicy(trap=mode == "trap"))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        out = {}
        if mode == "listener":
            out["listener_fd"] = load_filter(bpf, SECCOMP_FILTER_FLAG_NEW_LISTENER)
        else:
            out["load"] = load_filter(bpf)
        if mode == "trap":
            # A NOTIFY filter without a listener: every trapped call fails with ENOSYS.
            at_fdcwd = ctypes.c_int(-100)
            for name, flags in (("rdonly", os.O_RDONLY), ("path", os.O_PATH), ("wronly", os.O_WRONLY),
                                ("rdwr", os.O_RDWR), ("creat", os.O_RDONLY | os.O_CREAT),
                                ("trunc", os.O_RDONLY | os.O_TRUNC)):
                ret = libc.syscall(257, at_fdcwd, b"/dev/null", ctypes.c_int(flags | os.O_CLOEXEC), 0)
                out["openat_" + name] = 0 if ret >= 0 else ctypes.get_errno()
                ret = libc.syscall(2, b"/dev/null", ctypes.c_int(flags | os.O_CLOEXEC), 0)
                out["open_" + name] = 0 if ret >= 0 else ctypes.get_errno()
            buf = ctypes.create_string_buffer(390)
            out["uname"] = call(63, buf)
            out["mkdir"] = call(83, b"/no/such/zerovisor/dir", 0)
            out["execve"] = call(59, b"/no/such/zerovisor/file", None, None)
            out["openat2"] = call(437, at_fdcwd, b"/dev/null", None, ctypes.c_size_t(0))
        if mode == "int80":
            # mov eax, 20 (i386 getpid); int 0x80; ret -- another arch: the filter kills.
            buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            buf.write(b"\\xb8\\x14\\x00\\x00\\x00\\xcd\\x80\\xc3")
            ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))()
        # Each call is harmless should the filter be missing: the kernel would refuse it
        # (ENOENT, EINVAL, EFAULT) or it would touch only this throwaway child.
        out["unshare"] = call(272, ctypes.c_ulong(CLONE_NEWNS))
        out["mount"] = call(165, b"none", b"/no/such/zerovisor/dir", b"tmpfs", ctypes.c_ulong(0), None)
        out["ptrace"] = call(101, ctypes.c_long(-1), ctypes.c_long(0), None, None)
        out["bpf"] = call(321, ctypes.c_int(0), None, ctypes.c_uint(0))
        # CLONE_SIGHAND without CLONE_VM is EINVAL for the kernel: only the filter says EPERM.
        bad = CLONE_NEWUSER | 0x800 | 17
        out["clone_newuser"] = call(56, ctypes.c_ulong(bad), None, None, None, ctypes.c_ulong(0))
        out["clone3"] = call(435, None, ctypes.c_size_t(0))
        out["getpid"] = call(39)
        out["personality_query"] = libc.personality(0xFFFFFFFF) != -1
        child = os.fork()  # plain clone (glibc may try clone3 first) still works
        if child == 0:
            os._exit(7)
        out["fork_status"] = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 65536)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"status": status, "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
                      "child": json.loads(data) if data else None}))
    """
)


def probe(mode: str) -> dict[str, Any]:
    """Run PROBE in a subprocess; its report."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60, cwd=REPO, check=True
    )
    return dict(json.loads(proc.stdout))


def test_filter_is_whole_bpf_instructions() -> None:
    bpf = build_filter()
    assert len(bpf) > 0
    assert len(bpf) % filters.BPF_INSTRUCTION_SIZE == 0
    # First instruction: load seccomp_data.arch (BPF_LD|BPF_W|BPF_ABS at offset 4).
    assert struct.unpack_from("<HBBI", bpf) == (0x20, 0, 0, 4)


def test_unknown_names_are_skipped() -> None:
    plain = build_filter(FilterPolicy(denied=("mount",)))
    assert build_filter(FilterPolicy(denied=("mount", "no_such_syscall", "socketcall"))) == plain


def test_policy_is_open_to_more_rules() -> None:
    assert len(build_filter(FilterPolicy(denied=("mount", "chdir")))) > len(
        build_filter(FilterPolicy(denied=("mount",)))
    )


def test_denied_calls_fail_with_eperm_in_a_filtered_child() -> None:
    report = probe("plain")
    assert report["status"] == 0, report
    child = report["child"]
    assert child["load"] == 0
    for name in ("unshare", "mount", "ptrace", "bpf", "clone_newuser"):
        assert child[name] == errno.EPERM, name
    assert child["clone3"] == errno.ENOSYS
    assert child["getpid"] == 0
    assert child["personality_query"] is True
    assert child["fork_status"] == 7


def test_new_listener_returns_an_fd() -> None:
    report = probe("listener")
    assert report["status"] == 0, report
    assert report["child"]["listener_fd"] > 2


def test_other_architecture_is_killed() -> None:
    report = probe("int80")
    assert report["signal"] == 31, report  # SIGSYS: SECCOMP_RET_KILL_PROCESS
    assert report["child"] is None


@pytest.mark.parametrize("bpf", [b"", b"\0" * 7, b"\0" * 12])
def test_load_refuses_partial_programs(bpf: bytes) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        load_filter(bpf)


#: libseccomp's SCMP_ACT_NOTIFY as export_pfc prints it.
NOTIFY = "action 0x7fc00000;"


def pfc_rules(policy: FilterPolicy) -> dict[str, str]:
    """export_pfc of policy split per system call name: the lines of its rule block."""
    rules: dict[str, str] = {}
    name = ""
    for line in export_pfc(policy).splitlines():
        text = line.strip()
        if text.startswith('# filter for syscall "'):
            name = text.split('"')[1]
            rules[name] = ""
        elif text.startswith("#") or not line.startswith("  "):
            name = ""
        elif name:
            rules[name] += text + "\n"
    return rules


def test_trapped_calls_notify() -> None:
    rules = pfc_rules(DEFAULT_POLICY)
    for name in TRAPPED_SYSCALLS:
        if filters._native(name) < 0:
            continue
        assert NOTIFY in rules[name], name
        if name not in ("open", "openat"):
            assert rules[name].startswith(f"if ($syscall == {filters._native(name)})\n{NOTIFY}"), name
    for name in DENIED_SYSCALLS:
        if filters._native(name) >= 0:
            assert rules[name].endswith("action ERRNO(1);\n"), name
    assert set(TRAPPED_SYSCALLS) >= {"openat2", "creat", "utimensat", "execve", "execveat", "uname", "sysinfo"}
    assert not set(TRAPPED_SYSCALLS) & set(DENIED_SYSCALLS)


@pytest.mark.parametrize(("name", "arg"), [("open", 1), ("openat", 2)])
def test_open_is_trapped_only_for_write_create_or_truncate(name: str, arg: int) -> None:
    rule = pfc_rules(DEFAULT_POLICY)[name]
    # One conditional NOTIFY per bit (O_WRONLY, O_RDWR, O_CREAT, O_TRUNC), nothing unconditional.
    for bit in (0o1, 0o2, 0o100, 0o1000):
        assert f"if ($a{arg}.lo32 & 0x{bit:08x} == {bit})\n{NOTIFY}" in rule, rule
    lines = rule.splitlines()
    assert lines.count(NOTIFY) == 4
    assert all(lines[i - 1].startswith(f"if ($a{arg}.lo32 & ") for i, line in enumerate(lines) if line == NOTIFY)


def test_untrapped_policy_has_no_notify() -> None:
    assert "0x7fc00000" not in export_pfc(UNTRAPPED_POLICY)
    assert "0x7fc00000" in export_pfc(DEFAULT_POLICY)
    assert len(build_filter(UNTRAPPED_POLICY)) < len(build_filter(DEFAULT_POLICY))
    assert DEFAULT_POLICY.trap is True


def test_trapped_calls_reach_the_listener_and_read_only_opens_do_not() -> None:
    report = probe("trap")
    assert report["status"] == 0, report
    child = report["child"]
    enosys = errno.ENOSYS  # trapped, and no listener to answer
    for call in ("open", "openat"):
        assert child[f"{call}_rdonly"] == 0
        assert child[f"{call}_path"] == 0
        for flags in ("wronly", "rdwr", "creat", "trunc"):
            assert child[f"{call}_{flags}"] == enosys, (call, flags)
    for name in ("uname", "mkdir", "execve", "openat2"):
        assert child[name] == enosys, name
    assert child["unshare"] == errno.EPERM
    assert child["getpid"] == 0
