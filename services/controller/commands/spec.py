"""spec: write a default config.json into a bundle directory, as `runc spec` does."""

from __future__ import annotations

import click

from services.controller.commands.base import CliContext


@click.command("spec")
@click.option(
    "--bundle",
    "-b",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Bundle directory to write config.json into.",
)
@click.option("--rootless", is_flag=True, help="Write a config for a container run by an unprivileged user.")
@click.pass_obj
def cli(obj: CliContext, bundle: str, rootless: bool) -> None:
    """Create a new OCI config.json in the bundle directory; never overwrite one.

    The container's root filesystem goes in the bundle's rootfs/ directory.
    """
    import json
    import os

    from common.errors import ConflictError
    from services.controller.oci import CONFIG_NAME, bundle_dir, default_config

    # obj is unused: spec touches neither the registry nor the services.
    bundle = bundle_dir(bundle)
    path = os.path.join(bundle, CONFIG_NAME)
    data = (json.dumps(default_config(rootless), indent="\t") + "\n").encode()
    try:
        # O_EXCL: the check for an existing file and the creation are one step, so no race
        # with another writer can make us overwrite someone's config.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise ConflictError(f"{path} already exists: remove it first") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        os.unlink(path)  # leave no half-written config behind to block the next attempt
        raise
