"""The YOLOv5-repository family as a task (engine/task.py): the Ultralytics family's stages, run
directory, metrics, monitor, cancel and resume, around the repository's own model and loss.

What differs from `UltralyticsTask` is the model and how it is judged:
- models are `yolov5:<yaml>` or a trusted repository `best.pt`/`last.pt` (engine/detect/yolov5/model.py);
- training is Ultralytics' trainer (data loading, augmentation, EMA, optimizer, slimlab's Session
  callbacks: sparsity after unscaling and before the step, pruned-at-target monitor, s: auto, resume)
  with the repository's ComputeLoss inside the model (`Yolov5Detector.loss`), so the losses are
  box, obj and cls;
- mAP is Ultralytics' validator on the model's detections (objectness x class, as the repository's
  NMS ranks them) at the repository's val.py IoU threshold, 0.6 (Ultralytics' default is 0.7), its
  boxes clipped to the image before matching as the repository's val.py clips them
  (engine/detect/yolov5/repository_metrics.py): tests/test_yolov5_metrics.py checks the figures
  against the repository's own NMS, matching and AP code. Exported files are scored by the same
  rules (`validator_options`, and `family_options` in engine/detect/evaluate.py for the CLI).
"""

from __future__ import annotations

from typing import Any

from engine import checkpoint
from engine.detect.task import UltralyticsTask
from engine.detect.yolov5.repository_metrics import IOU as REPOSITORY_IOU
from engine.errors import PresetError
from engine.task import YOLOV5, Current, TaskKind


class Yolov5Task(UltralyticsTask):
    kind: TaskKind = YOLOV5

    def __init__(self, run: Any):
        super().__init__(run)
        from engine.detect.yolov5 import compat

        compat.load()

    def validator_options(self) -> dict[str, Any]:
        """The repository's val.py rules: its IoU, boxes clipped to the image, its ap_per_class."""
        from engine.detect.yolov5.repository_metrics import validator_options

        return validator_options()

    def fresh(self, spec_model: Any) -> Current:
        from engine.detect.yolov5.model import arch_of, is_arch

        run = self.run
        d = self.data()
        if spec_model.checkpoint is not None:
            # a YOLOv5 best.pt is a pickle: loaded only when the run was started with trust
            loaded = checkpoint.load(spec_model.checkpoint, trust=run.trust)
            refuse_other_family(loaded, spec_model.checkpoint)
            if loaded.arch["num_classes"] != d.nc:
                raise PresetError(f"{spec_model.checkpoint}: the model detects {loaded.arch['num_classes']} classes but "
                                  f"{d.yaml_path} names {d.nc}")
            return Current(loaded.model, loaded.arch, loaded.plan)
        import torch

        if not is_arch(spec_model.arch):
            raise PresetError(f"model.arch {spec_model.arch}: the YOLOv5 family builds yolov5:<model yaml> models")
        torch.manual_seed(run.spec.training.seed)
        model = checkpoint.build_model({"name": spec_model.arch, "num_classes": d.nc, "in_channels": 3,
                                        "kwargs": {**dict(spec_model.kwargs), "names": d.names, "imgsz": self.imgsz}},
                                       trust=run.trust)
        return Current(model, arch_of(model, spec_model.arch), None)

    def measure(self, cur: Current, out: Any, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """The stage's figures, its mAP always by the repository's val.py rules (`evaluator`): a training
        stage's best-epoch figures come from the validator inside Ultralytics' trainer, which matches
        and integrates AP its own way."""
        return super().measure(cur, out, None)

    def trainer_args(self, stage: Any, cur: Current) -> dict[str, Any]:
        args = super().trainer_args(stage, cur)
        args["iou"] = REPOSITORY_IOU  # the validation during training judges as the repository's val.py
        return args


def refuse_other_family(loaded: Any, path: Any) -> None:
    """A checkpoint of the Ultralytics family (or a classifier) given to the YOLOv5 family: named."""
    name = str(loaded.arch.get("name", ""))
    if loaded.arch.get("task") != "detect":
        raise PresetError(f"{path}: is not a detection checkpoint (the YOLOv5 family needs a YOLOv5-repository "
                          "best.pt or a slimlab checkpoint of a yolov5: model)")
    if loaded.arch.get("family") != "yolov5":
        raise PresetError(f"{path}: is an Ultralytics checkpoint ({name}), not a YOLOv5-repository one; the yolov5: "
                          "family reads the original YOLOv5 repository's models: give it as model.arch "
                          "ultralytics:<yaml> (or leave model.arch out) to slim it with the Ultralytics family")
