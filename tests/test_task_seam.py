"""The task seam (engine/task.py): the orchestrator knows no task, and a stage a task cannot run is
refused in one place, with the same message when a preset is checked and when a run directory runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from engine.config import RunSpec, spec_from_dict
from engine.errors import PresetError
from engine.task import CLASSIFY, KINDS, SHARED_STAGES, TRAINING_STAGES, ULTRALYTICS, kind_of

ORCHESTRATOR = Path("engine/pipeline.py")
SHARED = (Path("engine/slim/stages.py"), Path("engine/deploy/stages.py"))
TASK_PACKAGES = ("engine.classify", "engine.detect")


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize("path", [ORCHESTRATOR, *SHARED], ids=str)
def test_the_orchestrator_and_the_shared_stages_import_no_task(path):
    """They reach a task through engine/task.py only (its `impl` names the module to import)."""
    offenders = sorted(m for m in imported_modules(path) if m.startswith(TASK_PACKAGES))
    assert offenders == []


def test_every_kind_names_a_stage_type_of_the_presets():
    from engine.config import STAGE_TYPES

    assert set(TRAINING_STAGES + SHARED_STAGES) == set(STAGE_TYPES)
    for kind in KINDS.values():
        assert set(kind.stages) <= set(STAGE_TYPES), kind.name
        assert set(kind.instead) <= set(STAGE_TYPES), kind.name


def detect_preset(**stage: object) -> dict:
    return {"task": "detect", "model": {"arch": "ultralytics:yolov8n.yaml"}, "data": {"dataset": "yolo_shapes"},
            "stages": [{"type": "train"}, stage]}


@pytest.mark.parametrize("stage, what", [
    ({"type": "compress"}, "a compress stage"),
    ({"type": "scratch"}, "a scratch stage"),
])
def test_a_detection_preset_is_refused_the_stages_its_task_cannot_run(stage, what):
    data = detect_preset(**stage)
    with pytest.raises(PresetError) as e:
        spec_from_dict(data, source="d.yaml")
    spec = RunSpec.model_validate(data)  # what a run directory's spec.yaml holds, were it edited
    why = ULTRALYTICS.refusal(spec.stages[-1])
    assert why is not None and str(e.value).endswith(why)
    assert f"{what} is not available for Ultralytics detection models; " in why
    assert why.startswith(f"stage {spec.stages[-1].name}: ")


@pytest.mark.parametrize("where, key, value, says", [
    ("training", "accumulate", 4, "nominal batch of 64 images"),
    ("stage", "accumulate", 2, "nominal batch of 64 images"),
    ("training", "clip_norm", 1.0, "clips gradients at norm 10"),
    ("stage", "clip_norm", 5.0, "clips gradients at norm 10"),
    ("training", "sync_bn", True, "keeps Ultralytics' BatchNorm"),
])
def test_training_keys_ultralytics_does_its_own_way_are_refused_for_detection(where, key, value, says):
    data = detect_preset(type="finetune")
    section = data.setdefault("training", {}) if where == "training" else data["stages"][-1].setdefault("training", {})
    section[key] = value
    with pytest.raises(PresetError) as e:
        spec_from_dict(data, source="d.yaml")
    at = "training" if where == "training" else "stages[1].training"
    assert f"d.yaml: {at}.{key}: " in str(e.value) and says in str(e.value)
    assert f"remove {key} from a task: detect preset" in str(e.value)
    section[key] = {"accumulate": 1, "clip_norm": None, "sync_bn": False}[key]  # the values that change nothing
    spec_from_dict(data, source="d.yaml")


def test_a_detection_preset_takes_a_teacher():
    for stage in ({"type": "distill", "teacher": "train"}, {"type": "finetune", "teacher": "train",
                                                             "features": [{"type": "cwd", "student": "detect",
                                                                           "teacher": "detect"}]}):
        spec = spec_from_dict(detect_preset(**stage), source="d.yaml")
        assert ULTRALYTICS.refusal(spec.stages[-1]) is None


def test_classification_runs_every_stage_type():
    data = {"stages": [{"type": t} for t in ("train", "sparse", "sweep", "prune", "finetune", "evaluate", "scratch",
                                              "export", "quantize", "compress")]}
    data["stages"][1]["target"] = {"percent": 0.5}
    data["stages"][3]["percent"] = 0.5
    spec = spec_from_dict(data)
    assert kind_of(spec) is CLASSIFY
    assert [CLASSIFY.refusal(s) for s in spec.stages] == [None] * len(spec.stages)


@pytest.mark.detect
def test_a_run_refuses_at_run_time_with_the_message_of_the_preset_check(tmp_path, ultralytics_offline):
    """A spec.yaml edited after its run directory was made is refused when its stage comes, by the
    same rule: the earlier stages are not lost."""
    from engine.pipeline import Pipeline
    from engine.runs import create_run_dir

    data = detect_preset(type="compress")
    spec = RunSpec.model_validate(data)
    pipeline = Pipeline(spec, create_run_dir(tmp_path, "d"))
    with pytest.raises(PresetError) as e:
        pipeline.runner(spec.stages[-1])
    assert str(e.value) == ULTRALYTICS.refusal(spec.stages[-1])
    assert callable(pipeline.runner(spec.stages[0]))
