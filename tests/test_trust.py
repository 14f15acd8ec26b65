"""The trust rule: a file never chooses code to run.

The attacks of issue 8: a weights_only-readable checkpoint naming `torch.hub:load` (with a local
hubconf.py that writes a marker) or `logging:basicConfig` (with filename/filemode, truncating a
file), reached through every way slimlab reads files.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from engine import checkpoint, config, trust
from engine.cli import ExitCode, main
from engine.errors import NeedsTrust, UntrustedCheckpoint
from engine.runs import read_run

ARCH = checkpoint.arch_dict("vgg", 4, 3, {"depth": 11, "width": 0.125})


def slimlab_file(path: Path, arch: dict) -> Path:
    """A checkpoint that torch.load(weights_only=True) accepts, naming `arch`."""
    torch.save({"format": checkpoint.FORMAT, "arch": arch, "plan": None, "state_dict": {}, "meta": {}}, path)
    return path


@pytest.fixture
def attacks(tmp_path: Path) -> dict:
    """Both attack files, the hubconf marker and the victim file they aim at."""
    hub = tmp_path / "hub"
    hub.mkdir()
    marker = tmp_path / "PWNED"
    (hub / "hubconf.py").write_text(f"open({str(marker)!r}, 'w').write('hubconf ran')\ndef net(**kw):\n    return None\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    hub_file = slimlab_file(tmp_path / "hub.pt", {"name": "torch.hub:load", "num_classes": 4, "in_channels": 3,
                                                  "kwargs": {"repo_or_dir": str(hub), "model": "net", "source": "local"}})
    log_file = slimlab_file(tmp_path / "log.pt", {"name": "logging:basicConfig", "num_classes": 4, "in_channels": 3,
                                                  "kwargs": {"filename": str(victim), "filemode": "w"}})
    return {"files": [hub_file, log_file], "marker": marker, "victim": victim}


def untouched(attacks: dict) -> bool:
    return not attacks["marker"].exists() and attacks["victim"].read_text() == "precious"


def test_loading_refuses_what_a_file_names_before_importing_it(attacks):
    for path in attacks["files"]:
        with pytest.raises(UntrustedCheckpoint) as info:
            checkpoint.load(path)
        assert info.value.kind == "arch" and f"--allow-arch {info.value.arch}" in str(info.value)
        assert str(path) in str(info.value) and "(" in str(info.value)  # module:Class(kwargs) shown exactly
        assert "error" not in checkpoint.peek(path)  # peek reads, never builds
    assert untouched(attacks)


def test_even_named_or_trusted_only_nn_module_classes_are_called(attacks):
    """A user who says yes to torch.hub:load still gets no call: it is a function, not an nn.Module class."""
    for path in attacks["files"]:
        name = checkpoint.read_raw(path)["arch"]["name"]
        for allowed in (trust.Trust().allowing(name), trust.Trust.everything()):
            with pytest.raises(checkpoint.CheckpointError, match="not a torch.nn.Module subclass"):
                checkpoint.load(path, trust=allowed)
    assert untouched(attacks)


def test_cli_inspect_and_prune_refuse_with_the_flag_to_pass(attacks, capsys):
    for path in attacks["files"]:
        assert main(["inspect", str(path)]) == ExitCode.FAILED
        err = capsys.readouterr().err
        assert "--allow-arch" in err and "Traceback" not in err
        assert main(["prune", str(path), "--percent", "0.5", "--trust"]) == ExitCode.FAILED
        assert "not a torch.nn.Module subclass" in capsys.readouterr().err
    assert untouched(attacks)


def test_preset_checkpoint_and_teacher_naming_code_are_refused(attacks, tiny_preset, tmp_path, capsys):
    for path in attacks["files"]:
        for changes in ({"model": {"arch": "vgg", "kwargs": {"depth": 11, "width": 0.125}, "checkpoint": str(path)}},
                        {"stages": [{"type": "train"}, {"type": "distill", "teacher": str(path)}],
                         "training": {"epochs": 0, "batch_size": 32, "device": "cpu"}}):
            preset = tiny_preset(**changes)
            assert main(["--batch", str(preset), "--runs-dir", str(tmp_path / "runs")]) == ExitCode.FAILED
            err = capsys.readouterr().err
            assert "--allow-arch" in err and str(path) in err
    assert untouched(attacks)


NET = """
    from torch import nn

    class Net(nn.Module):
        def __init__(self, num_classes, in_channels=3, hidden=8):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
            self.bn = nn.BatchNorm2d(hidden)
            self.fc = nn.Linear(hidden, num_classes)

        def forward(self, x):
            return self.fc(self.bn(self.conv(x)).mean((2, 3)))
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "slimlab_trust_net.py").write_text(textwrap.dedent(NET))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delitem(sys.modules, "slimlab_trust_net", raising=False)
    return "slimlab_trust_net:Net"


def test_a_users_own_class_needs_their_word_when_a_file_names_it(tmp_path, user_module, capsys):
    from engine import models

    model = models.build(user_module, 4, hidden=6, trust=trust.Trust().allowing(user_module))
    path = tmp_path / "own.pt"
    checkpoint.save(path, model, checkpoint.arch_dict(user_module, 4, 3, {"hidden": 6}))
    with pytest.raises(UntrustedCheckpoint, match=r"slimlab_trust_net:Net\(hidden=6\)"):
        checkpoint.load(path)
    assert main(["inspect", str(path), "--json"]) == ExitCode.FAILED
    assert f"--allow-arch {user_module}" in capsys.readouterr().err
    assert main(["inspect", str(path), "--json", "--allow-arch", user_module]) == ExitCode.OK
    capsys.readouterr()
    assert main(["inspect", str(path), "--json", "--allow-arch", "vgg"]) == ExitCode.USAGE  # not a module:Class


def copied_run(tmp_path: Path, preset: Path) -> Path:
    """A cancelled run directory written by someone else: spec.yaml without this user's signature."""
    run = tmp_path / "elsewhere" / "run"
    (run / "weights").mkdir(parents=True)
    shutil.copy(preset, run / "spec.yaml")
    (run / "status.json").write_text('{"state": "cancelled", "completed": [], "outputs": {}}')
    return run


def test_resuming_a_copied_run_directory_needs_the_arch_named(tmp_path, tiny_preset, attacks, user_module, capsys):
    evil = tiny_preset(model={"arch": "torch.hub:load", "kwargs": {"repo_or_dir": str(attacks["marker"].parent / "hub"),
                                                                  "model": "net", "source": "local"}})
    run = copied_run(tmp_path, evil)
    assert main(["--batch", "--resume", str(run)]) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert "not written by this user" in err and "--allow-arch torch.hub:load" in err
    assert read_run(run).state == "cancelled"  # refused before anything was written
    assert main(["--batch", "--resume", str(run), "--trust"]) == ExitCode.USAGE  # caught before any stage
    assert "not a torch.nn.Module subclass" in capsys.readouterr().err
    assert untouched(attacks)

    own = copied_run(tmp_path / "b", tiny_preset(model={"arch": user_module}, training={"epochs": 0, "device": "cpu"}))
    assert trust.unsigned_archs(own, config.load_preset(own / "spec.yaml"), trust.Trust()) == [user_module]
    assert main(["--batch", "--resume", str(own), "--allow-arch", user_module]) == ExitCode.OK


def test_own_run_directories_resume_without_asking_and_edits_are_caught(tmp_path, tiny_preset, user_module, capsys):
    preset = tiny_preset(model={"arch": user_module}, training={"epochs": 0, "device": "cpu"})
    assert main(["--batch", str(preset), "--runs-dir", str(tmp_path / "runs"), "--name", "own"]) == ExitCode.OK
    run = tmp_path / "runs" / "own"
    assert trust.spec_signed(run)
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    (run / "status.json").write_text('{"state": "cancelled", "completed": [], "outputs": {}}')
    assert main(["--batch", "--resume", str(run)]) == ExitCode.OK  # signed by this user: no question
    spec["model"]["kwargs"] = {"hidden": 3}  # any edit breaks the signature
    (run / "spec.yaml").write_text(yaml.safe_dump(spec))
    (run / "status.json").write_text('{"state": "cancelled", "completed": [], "outputs": {}}')
    assert not trust.spec_signed(run)
    capsys.readouterr()
    assert main(["--batch", "--resume", str(run)]) == ExitCode.FAILED
    assert f"--allow-arch {user_module}" in capsys.readouterr().err


def test_workbench_resume_asks_for_a_copied_runs_class_and_passes_the_yes_on(tmp_path, tiny_preset, user_module):
    from tui import launcher

    run = copied_run(tmp_path, tiny_preset(model={"arch": user_module, "kwargs": {"hidden": 5}}))
    with pytest.raises(NeedsTrust) as info:
        launcher.check_spec_trust(run, ())
    assert info.value.arch == user_module and info.value.kwargs == {"hidden": 5}  # what the dialog shows
    launcher.check_spec_trust(run, (user_module,))  # after the yes: no question left
