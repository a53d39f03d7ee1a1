"""state: print the OCI state of a container as JSON."""

from __future__ import annotations

import json

import click

from services.controller.commands.base import CliContext, controller_call


def oci_state(state: object) -> dict[str, object]:
    """The OCI runtime spec's state object (its key names) for a ContainerState."""
    from common.messages.containers import ContainerState

    assert isinstance(state, ContainerState)
    return {
        "ociVersion": state.oci_version,
        "id": state.id,
        "status": state.status,
        "pid": state.pid,
        "bundle": state.bundle,
        "rootfs": state.rootfs,
        "created": state.created,
        "annotations": state.annotations,
        "owner": state.owner,
    }


@click.command("state")
@click.argument("cid")
@click.pass_obj
def cli(obj: CliContext, cid: str) -> None:
    """Print the state of container CID."""
    from common.messages.containers import ContainerState, IdArgs

    state = controller_call(obj, "Containers.State", IdArgs(id=cid), ContainerState)
    click.echo(json.dumps(oci_state(state), indent=2))
