"""The whole preset is checked before the first stage runs; CLI and engine read options alike."""

from __future__ import annotations

import json

import pytest
import torch

from engine import checkpoint
from engine.cli import ExitCode, main
from engine.config import load_preset
from engine.errors import PresetError

KD_STUDENT = {"arch": "kd_student", "kwargs": {"bn": True}}


@pytest.mark.parametrize("stages, expected", [
    ([{"type": "train"}, {"type": "finetune", "teacher": "original"}], "no prune stage comes before"),
    ([{"type": "train"}, {"type": "finetune", "kd": {"T": 4.0}}], "need a teacher"),
    ([{"type": "train"}, {"type": "distill", "teacher": "later"}, {"type": "train", "name": "later"}],
     "stage 'later', which runs after it"),
    ([{"type": "train"}, {"type": "distill", "teacher": "distill"}], "teacher names itself"),
    ([{"type": "train"}, {"type": "finetun"}], "unknown stage type 'finetun' (did you mean 'finetune'?)"),
    ([{"type": "train"}, {"type": "prune", "percent": 0.5, "min_keep": 2.5}], "a whole number >= 0"),
])
def test_stage_mistakes_are_found_when_the_preset_is_read(tiny_preset, stages, expected):
    with pytest.raises(PresetError) as e:
        load_preset(tiny_preset(stages=stages))
    assert expected in str(e.value)


def test_mistakes_found_only_with_the_model_stop_the_run_before_it_exists(tmp_path, tiny_preset, capsys):
    cases = [
        ({"model": {"arch": "vgg", "kwargs": {"depth": 11, "widht": 0.5}}}, "does not take 'widht'"),
        ({"model": {"arch": "kd_student"}, "stages": [{"type": "train"}, {"type": "sparse"}]},
         "has no BatchNorm layers, so network slimming has nothing to score"),
    ]
    for changes, expected in cases:
        preset = tiny_preset(**changes)
        assert main(["--batch", str(preset), "--runs-dir", str(tmp_path / "runs")]) == ExitCode.USAGE
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_min_keep_zero_is_the_same_count_for_the_cli_and_the_engine(tmp_path, capsys):
    arch = checkpoint.arch_dict("resnet_cifar", 4, 3, {"depth": 8, "width": 0.5})
    torch.manual_seed(0)
    model = checkpoint.build_model(arch)
    path = tmp_path / "m.pt"
    checkpoint.save(path, model, arch)
    assert main(["prune", str(path), "--percent", "0.5", "--min-keep", "0", "--out", str(tmp_path / "a.pt")]) == 0
    assert main(["prune", str(path), "--percent", "0.5", "--min-keep", "2.5"]) == ExitCode.USAGE
    assert "a whole number >= 0" in capsys.readouterr().err
    # two prunes into one folder keep both plans, each named after its checkpoint
    assert main(["prune", str(path), "--percent", "0.3", "--out", str(tmp_path / "b.pt")]) == 0
    for name in ("a", "b"):
        assert json.loads((tmp_path / f"{name}.plan.json").read_text()) == checkpoint.load(tmp_path / f"{name}.pt").plan
