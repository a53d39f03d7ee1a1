"""What `controller exec` runs: the user's request resolved against the container's spec, as
runc's and runsc's exec commands resolve it.

Without --process the container's own process is the base: the command replaces its args, and
--cwd, --env (merged over its environment), --user, --additional-gids, --cap and --tty change
it. With --process the file is the process; the fields it leaves unset (cwd, env,
capabilities) come from the container's spec.
"""

from __future__ import annotations

import dataclasses

from common.errors import InvalidArgument
from common.messages.execs import ExecArgs
from common.messages.lifecycle import Limit
from common.messages.proc import ExecRequest
from common.messages.spec import DEFAULT_CAPABILITIES, Capabilities, ProcessSpec
from services.controller import oci


def exec_args(req: ExecRequest, base: ProcessSpec | None) -> ExecArgs:
    """The sentry's ExecArgs for req in a container whose process is base."""
    process = _from_file(req.process, base) if req.process else _from_flags(req, base)
    return ExecArgs(
        container_id=req.id,
        argv=list(process.args),
        envv=list(process.env),
        wd=process.cwd,
        uid=process.uid,
        gid=process.gid,
        extra_gids=list(process.additional_gids),
        capabilities=process.capabilities,
        no_new_privileges=process.no_new_privileges,
        terminal=process.terminal,
        limits={r.type: Limit(cur=r.soft, max=r.hard) for r in process.rlimits},
        guest_fds=list(req.guest_fds),
        token=req.token,
        fds=list(req.fds),
    )


def merge_env(env: list[str], overrides: list[str]) -> list[str]:
    """env with each KEY=VALUE of overrides replacing KEY's entry, or appended."""
    merged = {entry.partition("=")[0]: entry for entry in env}
    for entry in overrides:
        key, sep, _ = entry.partition("=")
        if not key or not sep:
            raise InvalidArgument(f"--env {entry!r}: want KEY=VALUE")
        merged[key] = entry
    return list(merged.values())


def _from_file(text: str, base: ProcessSpec | None) -> ProcessSpec:
    process, given = oci.parse_process(text, "process file")
    if base is None:
        return process
    return dataclasses.replace(
        process,
        cwd=process.cwd if "cwd" in given else base.cwd,
        env=process.env if "env" in given else list(base.env),
        capabilities=process.capabilities if "capabilities" in given else base.capabilities,
    )


def _from_flags(req: ExecRequest, base: ProcessSpec | None) -> ProcessSpec:
    if not req.args:
        raise InvalidArgument("exec needs a command (or --process)")
    process = base or ProcessSpec(args=req.args)
    if req.cwd is not None and not req.cwd.startswith("/"):
        raise InvalidArgument(f"--cwd {req.cwd!r}: want an absolute path in the container")
    return dataclasses.replace(
        process,
        args=list(req.args),
        env=merge_env(process.env, req.env),
        cwd=req.cwd if req.cwd is not None else process.cwd,
        uid=req.uid if req.uid is not None else process.uid,
        gid=req.gid if req.gid is not None else process.gid,
        additional_gids=list(req.additional_gids if req.additional_gids is not None else process.additional_gids),
        capabilities=_with_caps(process.capabilities, req.caps),
        terminal=req.tty,
    )


def _with_caps(caps: Capabilities | None, added: list[str]) -> Capabilities | None:
    """caps with added in the bounding, effective and permitted sets (runc exec --cap); ambient
    too when the inheritable set is not empty, since ambient needs inheritable."""
    if not added:
        return caps
    base = caps or Capabilities(
        bounding=list(DEFAULT_CAPABILITIES), effective=list(DEFAULT_CAPABILITIES), permitted=list(DEFAULT_CAPABILITIES)
    )

    def plus(names: list[str]) -> list[str]:
        return names + [cap for cap in added if cap not in names]

    return dataclasses.replace(
        base,
        bounding=plus(base.bounding),
        effective=plus(base.effective),
        permitted=plus(base.permitted),
        ambient=plus(base.ambient) if base.inheritable else base.ambient,
    )
