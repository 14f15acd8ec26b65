"""Whole-preset checks of how stages refer to each other, before anything runs.

A teacher that names a later stage, `teacher: original` with no prune before it, or a finetune
with KD terms and no teacher were found only when that stage started, after earlier stages had
trained. Torch-free: the launcher form runs these on every edit.
"""

from __future__ import annotations

from typing import Any

from engine.errors import PresetError


def check_stage_graph(spec: Any, source: str) -> None:
    names = [s.name for s in spec.stages]
    for i, stage in enumerate(spec.stages):
        where = f"{source}: stages[{i}] ({stage.name})"
        teacher = getattr(stage, "teacher", None)
        uses_teacher = bool(getattr(stage, "kd", None) or getattr(stage, "features", None))
        if stage.type == "finetune" and uses_teacher and teacher is None:
            raise PresetError(f"{where}: kd or feature terms need a teacher: teacher: original (the model before "
                              "the prune), the name of an earlier stage, or a checkpoint path")
        if teacher is None:
            continue
        if teacher == "original":
            if not any(s.type == "prune" for s in spec.stages[:i]):
                raise PresetError(f"{where}: teacher 'original' is the model before a prune, but no prune stage "
                                  f"comes before this stage; name an earlier stage ({', '.join(names[:i]) or 'none'}) "
                                  "or a checkpoint instead")
        elif teacher in names and names.index(teacher) >= i:
            later = "itself" if teacher == stage.name else f"stage {teacher!r}, which runs after it"
            raise PresetError(f"{where}: teacher names {later}, whose output does not exist yet; a teacher is "
                              f"'original', an earlier stage ({', '.join(names[:i]) or 'none'}) or a checkpoint")
