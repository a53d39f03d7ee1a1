"""`controller spec`: writes runc's default config.json into a bundle and never overwrites one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from common.errors import ConflictError, NotFound
from services.controller import cli as cli_module
from services.controller.commands import spec
from services.controller.commands.base import CliContext
from services.controller.oci import default_config, load_bundle


@pytest.fixture
def obj(tmp_path: Path) -> CliContext:
    return CliContext(root=str(tmp_path / "root"), run_dir=str(tmp_path / "run"), log_format="text", debug=False)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "bundle"
    path.mkdir()
    return path


def test_writes_default_config(obj: CliContext, bundle: Path) -> None:
    result = CliRunner().invoke(spec.cli, ["--bundle", str(bundle)], obj=obj)
    assert result.exit_code == 0, result.output
    text = (bundle / "config.json").read_text()
    assert json.loads(text) == default_config()
    assert text.startswith('{\n\t"ociVersion": "1.0.2"')  # runc indents with tabs


def test_written_config_loads_as_a_bundle(obj: CliContext, bundle: Path) -> None:
    assert CliRunner().invoke(spec.cli, ["-b", str(bundle)], obj=obj).exit_code == 0
    (bundle / "rootfs").mkdir()
    loaded = load_bundle(str(bundle))
    assert loaded.rootfs == str(bundle / "rootfs")
    assert loaded.process is not None
    assert loaded.process.args == ["sh"]


def test_rootless(obj: CliContext, bundle: Path) -> None:
    result = CliRunner().invoke(spec.cli, ["-b", str(bundle), "--rootless"], obj=obj)
    assert result.exit_code == 0, result.output
    config = json.loads((bundle / "config.json").read_text())
    assert config == default_config(rootless=True)
    types = [ns["type"] for ns in config["linux"]["namespaces"]]
    assert "user" in types
    assert "network" not in types
    assert "uidMappings" in config["linux"]


def test_default_bundle_is_the_cwd(obj: CliContext, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(bundle)
    result = CliRunner().invoke(spec.cli, [], obj=obj)
    assert result.exit_code == 0, result.output
    assert (bundle / "config.json").is_file()


def test_refuses_to_overwrite(obj: CliContext, bundle: Path) -> None:
    (bundle / "config.json").write_text("mine")
    result = CliRunner().invoke(spec.cli, ["-b", str(bundle)], obj=obj)
    assert result.exit_code == 1
    assert isinstance(result.exception, ConflictError)
    assert "config.json already exists: remove it first" in str(result.exception)
    assert (bundle / "config.json").read_text() == "mine"


def test_missing_bundle(obj: CliContext, tmp_path: Path) -> None:
    result = CliRunner().invoke(spec.cli, ["-b", str(tmp_path / "nope")], obj=obj)
    assert result.exit_code == 1
    assert isinstance(result.exception, NotFound)
    assert f"bundle {tmp_path / 'nope'} does not exist" in str(result.exception)
    assert not (tmp_path / "nope").exists()


def test_bundle_that_is_a_file_is_a_usage_error(obj: CliContext, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(spec.cli, ["-b", str(tmp_path / "file")], obj=obj)
    assert result.exit_code == 2
    assert "is a file" in result.output


def test_through_the_group_exits_1_with_a_message(
    tmp_path: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group turns ConflictError into exit code 1; spec is registered here until cli.py lists it."""
    if "spec" not in cli_module.COMMANDS:
        monkeypatch.setattr(cli_module, "COMMANDS", (*cli_module.COMMANDS, "spec"))
    runner = CliRunner()
    argv = ["--root", str(tmp_path / "root"), "spec", "-b", str(bundle)]
    assert runner.invoke(cli_module.cli, argv).exit_code == 0
    result = runner.invoke(cli_module.cli, argv)
    assert result.exit_code == 1
    assert "controller: " in result.output
    assert "already exists: remove it first" in result.output


def test_help(obj: CliContext) -> None:
    result = CliRunner().invoke(spec.cli, ["--help"], obj=obj)
    assert result.exit_code == 0
    assert "--bundle" in result.output
    assert "--rootless" in result.output
