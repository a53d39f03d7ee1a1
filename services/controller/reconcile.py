"""Bringing the registry and the sentry back into agreement after either restarted.

The registry is the record of which containers exist; the sentry (rebuilt from the platform
when it restarts) is the truth about their tasks. A create that a restart cut short leaves
either a record still "creating" (the controller died) or a container no record names (the
sentry or the platform died before the controller heard back): the first is settled from the
sentry, the second is deleted, so that the id can be used again.
"""

from __future__ import annotations

import logging

from common.client import ServiceChannel
from common.errors import ErrCode, ZerovisorError, has_code
from common.messages.lifecycle import (
    ContainerArgs,
    ContainerList,
    ContainerStatus,
    DeleteContainerArgs,
    ListContainersArgs,
)
from services.controller.containers import record_status
from services.controller.registry import Registry

log = logging.getLogger(__name__)


def settle_creating(registry: Registry, sentry: ServiceChannel) -> int:
    """Records left "creating" by a controller that died mid-create: created if the sentry has
    the container, else removed; how many were settled. Only at start, when no create is in
    flight."""
    settled = 0
    for rec in registry.list():
        if rec.status != "creating":
            continue
        try:
            status: ContainerStatus = sentry.call("Lifecycle.GetStatus", ContainerArgs(cid=rec.id), ContainerStatus)
        except ZerovisorError as e:
            if not has_code(e, ErrCode.NOT_FOUND):
                raise
            log.info("container %r was never created; its record goes", rec.id)
            registry.remove(rec.id)
        else:
            log.info("container %r was created after all: %s", rec.id, status.status)
            registry.update(rec.id, pid=status.pid)
            record_status(registry, status)
        settled += 1
    return settled


def delete_orphans(registry: Registry, sentry: ServiceChannel) -> int:
    """Delete the sentry's containers that no record names (a create cut short); how many."""
    listing: ContainerList = sentry.call("Lifecycle.ListContainers", ListContainersArgs(), ContainerList)
    deleted = 0
    for c in listing.containers:
        if registry.find(c.cid) is not None:
            continue
        log.info("deleting container %r: the registry has no record of it", c.cid)
        try:
            sentry.call("Lifecycle.DeleteContainer", DeleteContainerArgs(cid=c.cid, force=True))
        except ZerovisorError as e:
            log.warning("deleting orphan container %r: %s", c.cid, e)
            continue
        deleted += 1
    return deleted
