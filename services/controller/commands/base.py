"""What the CLI halves of the commands share. Imports click only."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


@dataclass(frozen=True, slots=True)
class CliContext:
    """The global flags, resolved; passed to every command as click's ``obj``."""

    #: Directory of the container registry (absolute).
    root: str
    #: Directory of the services' sockets, locks and logs (absolute).
    run_dir: str
    #: Log line format for the CLI and the services it starts.
    log_format: str
    #: Debug logging for the CLI and the services it starts.
    debug: bool

    def with_run_dir(self, run_dir: str | None) -> CliContext:
        """This context, with a command's own --run-dir taking precedence over the global one."""
        if not run_dir:
            return self
        return CliContext(self.root, os.path.abspath(run_dir), self.log_format, self.debug)


def run_dir_option(fn: F) -> F:
    """A command-level --run-dir, for the commands that manage the services themselves."""
    return click.option(
        "--run-dir",
        "run_dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Run directory of the services (overrides the global --run-dir).",
    )(fn)
