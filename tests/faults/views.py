"""What each party says of a container (the controller through its CLI, the sentry and the
platform through their own RPC endpoints), and whether they agree."""

from __future__ import annotations

import json
from dataclasses import dataclass

from common.errors import ErrCode, RemoteError, ServiceUnavailable
from common.zmqclient import RpcClient
from tests.faults.harness import EXIT_REMOTE, LIVE, RPC_TIMEOUT, Faults


@dataclass(frozen=True, slots=True)
class View:
    """What one party says of a container: its status ("absent" if unknown, "error" if it
    could not say) and init pid."""

    status: str
    pid: int | None = None
    detail: str = ""


def controller_view(f: Faults, cid: str) -> View:
    """`controller state cid`."""
    proc = f.cli("state", cid)
    if proc.returncode == 0:
        state = json.loads(proc.stdout)
        return View(str(state["status"]), int(state["pid"]))
    if proc.returncode == EXIT_REMOTE and "does not exist" in proc.stderr:
        return View("absent")
    return View("error", detail=f"exit {proc.returncode}: {proc.stderr.strip()}")


def rpc(f: Faults, service: str, method: str, args: dict[str, object]) -> dict[str, object] | View:
    """A direct call to service: its result, or the View that stands for its failure."""
    try:
        with RpcClient(f.run_dir.endpoint(service), timeout=RPC_TIMEOUT) as client:
            return client.call(method, args)
    except RemoteError as e:
        if e.remote_code == ErrCode.NOT_FOUND:
            return View("absent", detail=str(e))
        return View("error", detail=f"{method}: {e}")
    except ServiceUnavailable as e:
        return View("error", detail=f"{method}: {e}")


def sentry_view(f: Faults, cid: str) -> View:
    """The sentry's Lifecycle.GetStatus."""
    result = rpc(f, "sentry", "Lifecycle.GetStatus", {"cid": cid})
    if isinstance(result, View):
        return result
    pid = result.get("pid")
    return View(str(result["status"]), pid if isinstance(pid, int) else None)


def platform_pids(f: Faults, cid: str) -> list[int] | View:
    """The platform's Platform.Pids: host pids in the container's cgroup."""
    result = rpc(f, "platform", "Platform.Pids", {"cid": cid})
    if isinstance(result, View):
        return result
    pids = result.get("pids")
    return [int(p) for p in pids] if isinstance(pids, list) else View("error", detail=repr(result))


def listings(f: Faults) -> tuple[dict[str, str] | str, dict[str, str] | str]:
    """`controller list` and the sentry's Lifecycle.ListContainers, as id -> status
    (or the error text)."""
    proc = f.cli("list", "--format", "json")
    ctl: dict[str, str] | str = (
        {str(s["id"]): str(s["status"]) for s in json.loads(proc.stdout)}
        if proc.returncode == 0
        else f"exit {proc.returncode}: {proc.stderr.strip()}"
    )
    result = rpc(f, "sentry", "Lifecycle.ListContainers", {})
    sentry: dict[str, str] | str
    if isinstance(result, View):
        sentry = result.detail
    else:
        entries = result.get("containers")
        sentry = {str(c["cid"]): str(c["status"]) for c in entries} if isinstance(entries, list) else repr(result)
    return ctl, sentry


def states_agree(f: Faults, cid: str, expected: str | None = None) -> str:
    """Controller (state and list), sentry (status and list) and platform (pids) tell one
    story of cid; return the controller's status."""
    ctl, sentry, pids = controller_view(f, cid), sentry_view(f, cid), platform_pids(f, cid)
    story = f"controller {ctl}, sentry {sentry}, platform {pids}"
    f.note(f"state of {cid}: {story}")
    f.expect(ctl.status != "error", f"controller cannot say the state of {cid}: {ctl.detail}")
    f.expect(sentry.status != "error", f"sentry cannot say the state of {cid}: {sentry.detail}")
    f.expect(ctl.status == sentry.status, f"{cid}: controller and sentry disagree: {story}")
    if expected is not None:
        f.expect(ctl.status == expected, f"{cid} is {ctl.status}, expected {expected}: {story}")
    if ctl.status in LIVE:
        f.expect(bool(ctl.pid) and ctl.pid == sentry.pid, f"{cid}: init pids differ: {story}")
        f.expect(isinstance(pids, list) and ctl.pid in pids, f"{cid}: the platform does not hold its init: {story}")
    elif ctl.status in ("stopped", "absent"):
        f.expect(
            pids == [] or (isinstance(pids, View) and pids.status == "absent"),
            f"{cid} is {ctl.status} but the platform still has tasks or fails: {story}",
        )
    ctl_list, sentry_list = listings(f)
    for name, listing, view in (("controller", ctl_list, ctl), ("sentry", sentry_list, sentry)):
        if isinstance(listing, str):
            f.problem(f"{name} cannot list containers: {listing}")
        else:
            f.expect(
                listing.get(cid, "absent") == view.status,
                f"{cid}: {name}'s list says {listing.get(cid, 'absent')}, its state {view.status}",
            )
    return ctl.status
