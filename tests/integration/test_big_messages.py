"""Messages bigger than one fd-channel frame (64 KiB), end to end on real services: a spec
with a large environment, and a platform that restarts holding more than a frame's worth; and
specs that together exceed a whole message (4 MiB), which no restart may need to send at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import wire
from tests.integration.test_restart import kill_service
from tests.integration.zerovisor import Zerovisor, sh

pytestmark = pytest.mark.integration

#: Environment variables of 2 KiB each: 40 make an 80 KiB spec (a frame is 64 KiB).
SIZE = 2048


def big_env_bundle(tmp_path: Path, script: str, name: str, count: int, size: int = SIZE) -> Path:
    """A bundle running `sh -c script` with count more variables BIG0.. of size bytes each."""
    bundle = sh(tmp_path, script, name=name)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["env"] += [f"BIG{i}={'v' * size}" for i in range(count)]
    config_path.write_text(json.dumps(config))
    return bundle


def test_a_container_whose_spec_exceeds_a_frame_runs_with_its_whole_environment(zv: Zerovisor, tmp_path: Path) -> None:
    bundle = big_env_bundle(tmp_path, 'echo "${#BIG0} ${#BIG39}"; env | grep -c ^BIG', "big", 40)
    assert zv("run", "-b", str(bundle), "big").stdout == "2048 2048\n40\n"


def test_a_platform_restarted_while_it_holds_more_than_a_frame_comes_back(zv: Zerovisor, tmp_path: Path) -> None:
    # Each spec fits a frame; together (what the fork server lists to a new platform) they do not.
    for cid in ("one", "two"):
        zv("run", "-d", "-b", str(big_env_bundle(tmp_path, "sleep 1000", f"bundle-{cid}", 20)), cid)
    kill_service(zv, "platform")
    zv("up")
    for cid in ("one", "two"):
        assert zv("exec", cid, "sh", "-c", 'echo "${#BIG19}"').stdout == "2048\n"
        assert zv.state(cid)["status"] == "running"
        zv("delete", "-f", cid)


def test_specs_that_together_exceed_a_message_survive_restarts(zv: Zerovisor, tmp_path: Path) -> None:
    # Three specs of ~1.4 MiB of environment (the kernel takes up to 2 MiB of it, 128 KiB a
    # variable): a listing of every spec, which restarts once asked for, would not fit 4 MiB.
    size = 120_000
    count = wire.MAX_MESSAGE_BYTES // (3 * size) + 1
    cids = ("one", "two", "three")
    for cid in cids:
        zv("run", "-d", "-b", str(big_env_bundle(tmp_path, "sleep 1000", f"bundle-{cid}", count, size)), cid)
    for service in ("platform", "sentry"):
        kill_service(zv, service)
        zv("up")
    for cid in cids:
        assert zv("exec", cid, "sh", "-c", f'echo "${{#BIG{count - 1}}}"').stdout == f"{size}\n"
        zv("delete", "-f", cid)
