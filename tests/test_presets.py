"""The presets ship inside the package: found by name from any folder, listed by the workbench."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import cli, config, presets
from engine.errors import PresetError


def test_builtin_presets_are_package_data():
    folder = presets.folder()
    assert folder.is_dir() and folder.name == "presets" and folder.parent.name == "engine"
    assert "demo" in presets.names() and all(p.suffix == ".yaml" for p in presets.paths())
    # the checkout's top-level presets/ is the same folder
    assert Path("presets").resolve() == folder.resolve()


def test_a_builtin_preset_loads_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = config.load_preset("demo")
    assert spec.name == "demo" and [s.type for s in spec.stages][:2] == ["train", "sparse"]
    assert presets.locate("demo.yaml") == presets.builtin("demo")
    assert presets.locate("train-only") == presets.folder() / "train_only.yaml"
    # a file in the working folder wins over a built-in of the same name
    Path("demo.yaml").write_text("name: mine\n")
    assert config.load_preset("demo.yaml").name == "mine"


def test_an_unknown_name_lists_the_builtin_presets(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PresetError, match="no built-in preset of that name; built-in: .*demo"):
        config.load_preset("nosuch")
    with pytest.raises(PresetError, match="no such preset file"):
        config.load_preset("somewhere/demo.yaml")  # a path is never read as a name
    assert cli.main(["--batch", "nosuch"]) == cli.ExitCode.USAGE
    assert "built-in: " in capsys.readouterr().err
