"""Inspector (2): one checkpoint's |gamma| and the engine's prune plan, recomputed per key press.

The model is loaded and traced once in a thread worker (`engine.checkpoint.load`,
`engine.slim.precompute`); after that every key press calls `plan_from_inputs` (numpy only; a
FLOPs/params target bisects over it, engine/slim/target.py)
and re-renders. `self.plan` is the PrunePlan on screen, and it is the object that `s` saves
and `x` applies, so what is shown is exactly what gets cut.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import ContentSwitcher, DataTable, Input, LoadingIndicator, Static
from textual.worker import get_current_worker

from tui.screens.base import WorkbenchScreen
from tui.widgets.ckpt_format import arch_label, display_path, fmt_count
from tui.widgets.ckpt_trust import TrustModal
from tui.widgets.confirm import ConfirmModal
from tui.widgets.filter_bar import FilterBar
from tui.widgets.histogram import GammaHistogram
from tui.widgets.inspector_jobs import JobBar
from tui.widgets.inspector_modals import OverrideModal, OverridePreview, ValueModal
from tui.widgets.inspector_state import (
    SWEEP_RATIOS,
    GroupGammas,
    PlanSettings,
    cut_fraction,
    cut_scores,
    fmt_override,
    group_gammas,
    group_name,
    override_pattern,
    parse_float,
    parse_fraction_kept,
    parse_min_keep,
    parse_override,
    parse_percent,
    parse_round_to,
    settings_from_spec,
    stepped_percent,
    summary_text,
    sweep_dataset,
)
from tui.widgets.inspector_sweep import SweepPlot
from tui.widgets.inspector_table import GroupTable

PRUNE_STEPS = 3
LOAD_TICK_S = 0.5
SWEEP_REDRAW_S = 0.25
STEP_KEYS = Binding.Group("±1%", compact=True)


def plan_name(path: Path) -> Path:
    """The plan file named after what it belongs to: model-pruned.pt -> model-pruned.plan.json."""
    from engine.slim.prune_file import plan_path  # the engine's rule; torch is loaded by now

    return plan_path(path)


def check_folder(path: Path) -> None:
    """Files are written into folders that exist: a typo must not create /nonexistent/dir."""
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"folder {folder} does not exist: create it first, or choose a file in an existing folder")


def describe_error(exc: BaseException) -> str:
    from engine.errors import SlimlabError

    return str(exc) if isinstance(exc, SlimlabError) else f"{type(exc).__name__}: {exc}"


class InspectorScreen(WorkbenchScreen):
    """Threshold/percent exploration on one checkpoint; `load(path)` opens one."""

    MODE = "inspector"
    NAME = "2 Inspector"
    BINDINGS = [
        Binding("left", "step(-1)", "Threshold down 1%", key_display="←", priority=True, group=STEP_KEYS,
                id="inspector.step_down"),
        Binding("right", "step(1)", "Threshold up 1%", key_display="→", priority=True, group=STEP_KEYS,
                id="inspector.step_up"),
        Binding("shift+left", "step(-10)", "Threshold down 10%", key_display="⇧←", priority=True, show=False,
                id="inspector.step_down_10"),
        Binding("shift+right", "step(10)", "Threshold up 10%", key_display="⇧→", priority=True, show=False,
                id="inspector.step_up_10"),
        Binding("t", "threshold", "Threshold", id="inspector.threshold"),
        Binding("p", "percent", "Percent", id="inspector.percent"),
        Binding("f", "target('target_flops')", "FLOPs target", show=False, id="inspector.target_flops"),
        Binding("F", "target('target_params')", "Params target", show=False, id="inspector.target_params"),
        Binding("k", "min_keep", "Min keep", show=False, id="inspector.min_keep"),
        Binding("r", "round_to", "Round to", show=False, id="inspector.round_to"),
        Binding("enter", "override", "Layer override", id="inspector.override"),
        Binding("l", "log", "Log counts", show=False, id="inspector.log"),
        Binding("v", "log_x", "Log |gamma| axis", show=False, id="inspector.log_x"),
        Binding("s", "save_plan", "Save", id="inspector.save_plan"),
        Binding("x", "prune", "Prune", id="inspector.prune"),
        Binding("w", "sweep", "Sweep", id="inspector.sweep"),
        Binding("slash", "filter", "Filter", key_display="/", id="inspector.filter"),
    ]

    @dataclass
    class LoadStep(Message):
        generation: int
        text: str

    @dataclass
    class ModelReady(Message):
        generation: int
        path: Path
        loaded: Any
        inputs: Any

    @dataclass
    class LoadFailed(Message):
        generation: int
        path: Path
        error: str
        needs_trust: Any  # the NeedsTrust error when a confirmation can make the load work
        trust: Any = None  # what the failed load was allowed

    @dataclass
    class PruneProgress(Message):
        generation: int
        text: str
        done: int

    @dataclass
    class PruneDone(Message):
        generation: int
        out: Path | None
        plan_path: Path | None
        error: str | None
        params: int = 0

    @dataclass
    class SweepProgress(Message):
        generation: int
        rows: list[dict[str, Any]]
        source: str
        text: str

    @dataclass
    class SweepDone(Message):
        generation: int
        rows: list[dict[str, Any]]
        source: str
        error: str | None

    def __init__(self) -> None:
        super().__init__()
        self.path: Path | None = None
        self.loaded: Any = None
        self.inputs: Any = None
        self.plan: Any = None
        self.settings = PlanSettings()
        self.gammas: dict[int, GroupGammas] = {}
        self.sweep_rows: list[dict[str, Any]] = []
        self.sweep_source = ""
        self.generation = 0
        self._pending: tuple[Path, Any] | None = None
        self._started = False  # set by on_mount: `is_mounted` turns true only after every mount handler
        self._sweeping = False
        self._sweep_latest: tuple[list[dict[str, Any]], str] | None = None  # newest rows not drawn yet
        self._load_started: float | None = None  # monotonic time the load in progress began
        self._load_step = ""

    def compose_body(self) -> ComposeResult:
        yield Static("Inspector", id="inspector-title", classes="screen-title")
        with ContentSwitcher(initial="inspector-message", id="inspector-switcher"):
            with Vertical(id="inspector-message"):
                yield Static(
                    "No checkpoint open. Choose one on the checkpoints screen (1) and press enter, "
                    "or start with: slimlab CHECKPOINT.pt",
                    id="inspector-message-text",
                )
                yield LoadingIndicator(id="inspector-loading")
            with Vertical(id="inspector-body"):
                yield Static("", id="summary")
                with Horizontal(id="plots"):
                    yield GammaHistogram(id="histogram")
                    yield SweepPlot(id="sweep")
                yield Static("", id="sweep-note")
                yield GroupTable(id="groups")
                yield FilterBar(id="groups-filter")
                yield JobBar(id="prune-job")
                yield JobBar(id="sweep-job")

    def on_mount(self) -> None:
        self.query_one("#inspector-loading").display = False
        self.query_one("#sweep", SweepPlot).display = False
        self.query_one("#sweep-note").display = False
        self._started = True
        self.set_interval(SWEEP_REDRAW_S, self._draw_sweep)
        self.set_interval(LOAD_TICK_S, self._show_loading)
        if self._pending is not None:
            path, trust = self._pending
            self._pending = None
            self.load(path, trust=trust)

    # ------------------------------------------------------------ loading

    @property
    def ready(self) -> bool:
        return self.plan is not None and self.inputs is not None

    def load(self, path: Path, *, trust: Any = False) -> None:
        """Open `path` (works before the screen is mounted: the load starts on mount).

        `trust` (an engine.trust.Trust, or True for everything) is what the user confirmed."""
        path = Path(path)
        if not self._started:
            self._pending = (path, trust)
            return
        self.generation += 1
        self.workers.cancel_group(self, "sweep")
        self._sweeping = False
        self._sweep_latest = None
        self.path, self.loaded, self.inputs, self.plan = path, None, None, None
        self.sweep_rows, self.sweep_source = [], ""
        for job in self.query(JobBar):
            job.finish()
        self.query_one("#inspector-title", Static).update(f"{display_path(path)} · loading")
        self._load_started, self._load_step = time.monotonic(), "starting"
        self._show_loading()
        self._load(self.generation, path, trust)

    def _message(self, text: str, *, loading: bool = False) -> None:
        self.query_one("#inspector-message-text", Static).update(text)
        self.query_one("#inspector-loading").display = loading
        self.query_one("#inspector-switcher", ContentSwitcher).current = "inspector-message"

    @work(thread=True, exit_on_error=False, exclusive=True, group="load")
    def _load(self, generation: int, path: Path, trust: Any) -> None:
        from engine.errors import NeedsTrust
        from tui import model_cache

        def step(text: str) -> None:
            self.post_message(self.LoadStep(generation, text))

        try:
            opened, _cached = model_cache.open_model(path, trust, step)
        except Exception as exc:  # any failure is shown on screen; the app keeps running
            needs = exc if isinstance(exc, NeedsTrust) else None
            self.post_message(self.LoadFailed(generation, path, describe_error(exc), needs, trust))
            return
        self.post_message(self.ModelReady(generation, path, opened.loaded, opened.inputs))

    def on_inspector_screen_load_step(self, message: LoadStep) -> None:
        if message.generation == self.generation:
            self._load_step = message.text
            self._show_loading()

    def _show_loading(self) -> None:
        """What the load is doing and for how long (refreshed while it runs)."""
        if self._load_started is None or self.path is None:
            return
        elapsed = time.monotonic() - self._load_started
        self._message(f"Opening {display_path(self.path)}\n\n{self._load_step} …  {elapsed:.0f} s", loading=True)

    def on_inspector_screen_load_failed(self, message: LoadFailed) -> None:
        if message.generation != self.generation:
            return
        self._load_started = None
        self.query_one("#inspector-title", Static).update(f"{display_path(message.path)} · could not open")
        self._message(f"Could not open {display_path(message.path)}:\n\n{message.error}\n\n"
                      "Press 1 to choose another checkpoint.")
        needs = message.needs_trust
        if needs is not None:
            from engine.trust import Trust

            granted = Trust.of(message.trust)
            if needs.kind == "arch":  # exactly the module:Class shown, nothing else
                granted = granted.allowing(needs.arch)
            else:
                granted = Trust(pickles=True, archs=granted.archs, any_arch=granted.any_arch)

            def answered(yes: bool | None) -> None:
                if yes:
                    self.load(message.path, trust=granted)

            arch = needs.arch if needs.kind == "arch" else None
            # the modal says what unpickling does; the reason adds what this file would import
            reason = (f"It imports {', '.join(needs.names[:4])}{' …' if len(needs.names) > 4 else ''}."
                      if arch is None and needs.names else message.error)
            self.app.push_screen(TrustModal(message.path, reason, arch=arch, kwargs=needs.kwargs), answered)

    def on_inspector_screen_model_ready(self, message: ModelReady) -> None:
        if message.generation != self.generation:
            return
        from engine.errors import SlimlabError
        from engine.slim.target import resolve_plan

        self._load_started = None
        loaded, inputs = message.loaded, message.inputs
        settings = settings_from_spec(loaded.meta)
        try:
            plan = resolve_plan(inputs, **settings.options())
        except SlimlabError:
            settings = PlanSettings()  # the spec's rule does not fit this model: start from the default
            plan = resolve_plan(inputs, **settings.options())
        self.loaded, self.inputs, self.settings, self.plan = loaded, inputs, settings, plan
        self.gammas = group_gammas(inputs)
        self.query_one("#inspector-title", Static).update(self._title_text())
        self.query_one("#histogram", GammaHistogram).set_values(inputs.arrays().sorted_prunable)
        table = self.query_one("#groups", GroupTable)
        table.populate(inputs.groups, self.gammas, self._model_order())
        self.query_one("#sweep", SweepPlot).display = False
        self.query_one("#sweep-note").display = False
        self.query_one("#inspector-switcher", ContentSwitcher).current = "inspector-body"
        self.render_plan()
        table.focus()

    def _title_text(self) -> str:
        arch = self.loaded.arch or {}
        name = arch_label(arch)
        groups = self.inputs.groups
        prunable = sum(1 for g in groups if g.prunable)
        pruned = "  [already pruned]" if self.loaded.plan else ""
        return (f"{display_path(self.path)} · {name} · {self.inputs.n_channels} channels in {len(groups)} "
                f"groups ({prunable} prunable) · score {self.inputs.score}{pruned}")

    def _model_order(self) -> list[int]:
        """Groups in module order of their first BatchNorm; groups without one go last."""
        position = {name: i for i, name in enumerate(self.inputs.gammas)}
        far = len(position)

        def key(g: Any) -> tuple[int, int]:
            spots = [position[n] for n in g.layers if n in position]
            return (min(spots) if spots else far, g.id)

        return [g.id for g in sorted(self.inputs.groups, key=key)]

    # ------------------------------------------------------------ the plan

    def compute(self, settings: PlanSettings) -> Any:
        """The engine's plan for `settings`; raises the engine's error when it refuses them."""
        from engine.slim.target import resolve_plan

        return resolve_plan(self.inputs, **settings.options())

    def apply(self, settings: PlanSettings, plan: Any | None = None) -> bool:
        try:
            plan = plan if plan is not None else self.compute(settings)
        except Exception as exc:
            self.notify(describe_error(exc), title="Plan not changed", severity="error")
            return False
        self.settings, self.plan = settings, plan
        self.render_plan()
        return True

    def current_ratio(self) -> float:
        t = self.plan.totals
        return 1.0 - t["prunable_after"] / t["prunable_before"] if t["prunable_before"] else 0.0

    def render_plan(self) -> None:
        plan = self.plan
        # fixed height (app.tcss): no layout pass, which would lay out the whole table again
        self.query_one("#summary", Static).update(summary_text(plan, self.settings), layout=False)
        self.query_one("#histogram", GammaHistogram).set_cut(plan.options.get("global_threshold"),
                                                            cut_scores(self.inputs, plan))
        self.query_one("#groups", GroupTable).show_plan(plan)
        if self.sweep_rows:
            self.query_one("#sweep", SweepPlot).set_current(self.current_ratio())

    def _need_model(self) -> bool:
        if self.ready:
            return True
        if self._load_started is not None and self.path is not None:
            self.notify(f"Still opening {display_path(self.path)}: {self._load_step}.", severity="information")
        else:
            self.notify("Open a checkpoint first (screen 1, enter).", severity="warning")
        return False

    def action_step(self, steps: int) -> None:
        if not self._need_model():
            return
        s = self.settings
        thr = s.threshold if s.threshold is not None else self.plan.options.get("global_threshold")
        current = s.percent if s.percent is not None else cut_fraction(self.inputs.arrays().sorted_prunable, thr)
        self.apply(s.with_percent(stepped_percent(current, steps)))

    def _ask(self, title: str, help: str, value: str, make: Any) -> None:
        """A value modal whose input becomes new settings; the engine's refusal shows inline."""

        def check(text: str) -> tuple[PlanSettings, Any]:
            settings = make(text)
            return settings, self.compute(settings)

        def done(result: tuple[PlanSettings, Any] | None) -> None:
            if result is not None:
                self.apply(*result)

        self.app.push_screen(ValueModal(title, help, value, check), done)

    def action_threshold(self) -> None:
        if not self._need_model():
            return
        thr = self.plan.options.get("global_threshold")
        self._ask("Threshold", "Channels whose |gamma| score is below this value are cut (e.g. 0.01).",
                  "" if thr is None else f"{thr:.6g}",
                  lambda text: self.settings.with_threshold(parse_float(text, "threshold")))

    def action_percent(self) -> None:
        if not self._need_model():
            return
        pct = self.settings.percent if self.settings.percent is not None else self.current_ratio()
        self._ask("Percent", "Fraction of prunable channels to cut, globally: 0.5 or 50%.", f"{pct:.4g}",
                  lambda text: self.settings.with_percent(parse_percent(text)))

    def action_target(self, kind: str) -> None:
        """Keep at most a fraction of the FLOPs or parameters: the threshold jumps to the lowest that does."""
        if not self._need_model():
            return
        what = "FLOPs" if kind == "target_flops" else "parameters"
        key = "flops" if kind == "target_flops" else "params"
        t = self.plan.totals
        now = t[f"{key}_after"] / max(1, t[f"{key}_before"])
        self._ask(f"{what} target", f"Fraction of the model's {what} to keep, e.g. 0.5 or 50%: the threshold "
                  f"moves to the lowest |gamma| whose plan keeps at most that (the plan's own estimate).",
                  f"{now:.3g}", lambda text: self.settings.with_target(kind, parse_fraction_kept(text, kind)))

    def action_min_keep(self) -> None:
        if not self._need_model():
            return
        self._ask("min_keep", "Channels every group keeps at least: a count (e.g. 4) or a fraction "
                  "of the group (e.g. 0.1). 0 lets a group be cut down to its best channel only if "
                  "the rule keeps any.", f"{self.settings.min_keep:g}",
                  lambda text: replace(self.settings, min_keep=parse_min_keep(text)))

    def action_round_to(self) -> None:
        if not self._need_model():
            return
        self._ask("round_to", "Round each group's kept count up to a multiple of this (e.g. 8).",
                  str(self.settings.round_to),
                  lambda text: replace(self.settings, round_to=parse_round_to(text)))

    def action_log(self) -> None:
        hist = self.query_one("#histogram", GammaHistogram)
        hist.set_log(not hist.log_scale)

    def action_log_x(self) -> None:
        hist = self.query_one("#histogram", GammaHistogram)
        hist.set_log_x(not hist.showing_log_x)

    # ------------------------------------------------------------ filter

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # ← → move the cursor in the filter field while it has the focus, not the threshold
        if action == "step" and isinstance(self.focused, Input):
            return False
        return True

    def action_filter(self) -> None:
        if self.ready:
            self.query_one("#groups-filter", FilterBar).open()

    @on(FilterBar.Changed, "#groups-filter")
    def _filtered(self, event: FilterBar.Changed) -> None:
        table = self.query_one("#groups", GroupTable)
        table.set_filter(event.text)
        if self.plan is not None:
            table.show_plan(self.plan)

    @on(FilterBar.Done, "#groups-filter")
    def _filter_done(self) -> None:
        self.query_one("#groups", GroupTable).focus()

    # ------------------------------------------------------------ per-layer override

    def action_override(self) -> None:
        if not self._need_model():
            return
        gid = self.query_one("#groups", GroupTable).selected_group()
        if gid is not None:
            self.open_override(gid)

    @on(DataTable.RowSelected, "#groups")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if self.ready and event.row_key.value is not None:
            self.open_override(int(event.row_key.value))

    def open_override(self, gid: int) -> None:
        group = self.plan.groups[gid]
        if group.ignored:
            self.notify(f"{group_name(group)} is left whole: {group.reason or 'not prunable'}", severity="warning")
            return
        pattern = override_pattern(group)
        values = self.gammas[gid].values

        def group_cut(plan: Any) -> tuple[Any, np.ndarray]:
            g = plan.groups[gid]
            mask = np.ones(g.total, dtype=bool)
            mask[g.kept_idxs] = False
            return g, values[mask] if values.size == g.total else np.zeros(0)

        def check(text: str) -> OverridePreview:
            rule = parse_override(text)
            settings = self.settings.with_override(pattern, rule)
            plan = self.compute(settings)
            g, cut = group_cut(plan)
            width = getattr(g, "width", 1)  # a unit is `width` channels (grouped convs): count channels
            return OverridePreview(settings, plan, rule, g.threshold, cut, g.kept * width, g.total * width)

        def done(result: tuple[str, Any] | None) -> None:
            if result is None:
                return
            action, preview = result
            if action == "clear":
                self.apply(self.settings.with_override(pattern, None))
            else:
                self.apply(preview.settings, preview.plan)

        rule = f"its override ({fmt_override(group.override)})" if group.override else "the global threshold"
        width = getattr(group, "width", 1)
        status = (f"Keeps {group.kept * width} of {group.total * width} channels under {rule}. "
                  f"A rule for {pattern} alone:")
        _, cut = group_cut(self.plan)
        self.app.push_screen(
            OverrideModal(group_name(group), values, group.threshold, cut,
                          fmt_override(self.settings.overrides.get(pattern)), check, status,
                          has_override=pattern in self.settings.overrides),
            done,
        )

    # ------------------------------------------------------------ save the plan

    def action_save_plan(self) -> None:
        if not self._need_model():
            return

        def check(text: str) -> Path:
            if not text.strip():
                raise ValueError(f"give a file name, e.g. {plan_name(self.path).name}")
            path = Path(text.strip()).expanduser()
            if path.is_dir():
                raise ValueError(f"{path} is a directory; give a file name inside it")
            check_folder(path)
            return path

        def done(path: Path | None) -> None:
            if path is not None:
                self.ask_overwrite([path], lambda: self.save_plan(path))

        self.app.push_screen(
            ValueModal("Save plan", "The plan as shown (PrunePlan JSON); `slimlab prune --plan` and "
                       "prune stages read it.", str(plan_name(self.path)), check),
            done,
        )

    def ask_overwrite(self, paths: list[Path], then: Any) -> None:
        """Run `then` at once when none of `paths` exists; else only after a yes."""
        existing = [p for p in paths if p.exists()]
        if not existing:
            then()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                then()

        names = " and ".join(display_path(p) for p in existing)
        self.app.push_screen(ConfirmModal(f"Overwrite {names}?",
                                          "The file already exists; writing replaces what it holds.",
                                          yes="Overwrite"), answered)

    def save_plan(self, path: Path) -> None:
        from engine.runs import write_json

        try:
            write_json(path, self.plan.to_dict())
        except OSError as exc:
            self.notify(f"{path}: {exc.strerror or exc}", title="Plan not saved", severity="error")
            return
        self.notify(f"Plan saved to {path}", title="Saved")

    # ------------------------------------------------------------ prune now

    def action_prune(self) -> None:
        if not self._need_model():
            return
        if self.query_one("#prune-job", JobBar).running:
            self.notify("Pruning is already running.", severity="warning")
            return
        from engine.slim.prune_file import default_out

        def check(text: str) -> Path:
            path = Path(text.strip()).expanduser()
            if not text.strip():
                raise ValueError("give a file name, e.g. model-pruned.pt")
            if path.suffix not in (".pt", ".pth", ".ckpt"):
                raise ValueError(f"{path.name}: use a .pt, .pth or .ckpt name")
            if path.resolve() == self.path.resolve():
                raise ValueError("that is the checkpoint being inspected; choose another name")
            check_folder(path)
            return path

        def done(out: Path | None) -> None:
            if out is not None:
                self.ask_overwrite([out, plan_name(out)], lambda: self.prune_to(out))

        out = default_out(self.path)
        again = " It was pruned before: the new plan is composed with its stored one." if self.loaded.plan else ""
        self.app.push_screen(
            ValueModal("Prune now", f"Write the pruned model ({fmt_count(self.plan.totals['params_after'])} params) "
                       f"and its plan ({plan_name(out).name}) beside it.{again}", str(out), check),
            done,
        )

    def prune_to(self, out: Path) -> None:
        self.query_one("#prune-job", JobBar).start(f"pruning → {out.name}", PRUNE_STEPS)
        self._prune(self.generation, out, self.plan, self.loaded, self.path)

    @work(thread=True, exit_on_error=False, group="prune")
    def _prune(self, generation: int, out: Path, plan: Any, loaded: Any, source: Path) -> None:
        try:
            from engine import checkpoint
            from engine.slim.prune_file import prune_checkpoint

            self.post_message(self.PruneProgress(generation, "copying the model", 1))
            # prune_checkpoint cuts the model it is given; the inspector keeps showing the original.
            own = replace(loaded, model=copy.deepcopy(loaded.model))
            self.post_message(self.PruneProgress(generation, f"cutting channels, writing {out.name}", 2))
            result = prune_checkpoint(own, plan, out, source=source, plan_out=plan_name(out))
            self.post_message(self.PruneProgress(generation, "reloading it to check it rebuilds", 3))
            reloaded = checkpoint.load(out)
            params = sum(p.numel() for p in reloaded.model.parameters())
        except Exception as exc:
            self.post_message(self.PruneDone(generation, None, None, describe_error(exc)))
            return
        self.post_message(self.PruneDone(generation, out, Path(result["plan"]), None, int(params)))

    def on_inspector_screen_prune_progress(self, message: PruneProgress) -> None:
        if message.generation == self.generation:
            self.query_one("#prune-job", JobBar).step(f"pruning: {message.text}", message.done)

    def on_inspector_screen_prune_done(self, message: PruneDone) -> None:
        if message.generation != self.generation:
            return
        self.query_one("#prune-job", JobBar).finish()
        if message.error:
            self.notify(message.error, title="Prune failed", severity="error")
        else:
            self.notify(f"Wrote {message.out} ({fmt_count(message.params)} params, reloaded fine) and "
                        f"{message.plan_path}", title="Pruned")

    # ------------------------------------------------------------ sensitivity sweep

    def action_sweep(self) -> None:
        if not self._need_model():
            return
        if self._sweeping:
            self.notify("A sweep is already running.", severity="warning")
            return
        self._sweeping = True
        self.query_one("#sweep-job", JobBar).start("sweep: preparing data …", len(SWEEP_RATIOS))
        s = self.settings
        self._sweep(self.generation, self.loaded, self.inputs,
                    {"min_keep": s.min_keep, "round_to": s.round_to, "overrides": s.options()["overrides"]})

    @work(thread=True, exit_on_error=False, group="sweep")
    def _sweep(self, generation: int, loaded: Any, inputs: Any, plan_opts: dict[str, Any]) -> None:
        worker = get_current_worker()
        rows: list[dict[str, Any]] = []
        source = ""
        try:
            import torch

            from engine import data
            from engine.slim.sweep import sweep
            from engine.train import evaluate

            num_classes = int((loaded.arch or {}).get("num_classes") or 0)
            if not num_classes:
                with torch.no_grad():
                    num_classes = int(loaded.model(torch.zeros(1, *inputs.input_shape)).shape[-1])
            spec, source = sweep_dataset(loaded.meta, num_classes, inputs.input_shape)
            self.post_message(self.SweepProgress(generation, [], source, f"sweep: building {spec.dataset} data …"))
            bundle = data.build(spec, batch_size=256)
            device = torch.device("cpu")

            def score(model: Any) -> dict[str, float]:
                return evaluate(model, bundle.val, device)

            for i, ratio in enumerate(SWEEP_RATIOS):
                if worker.is_cancelled:
                    return
                rows += sweep(loaded.model, inputs, score, ratios=[ratio], **plan_opts)
                self.post_message(self.SweepProgress(
                    generation, list(rows), source, f"sweep: {i + 1}/{len(SWEEP_RATIOS)} ratios on {spec.dataset}"))
        except Exception as exc:
            self.post_message(self.SweepDone(generation, rows, source, describe_error(exc)))
            return
        self.post_message(self.SweepDone(generation, rows, source, None))

    def on_inspector_screen_sweep_progress(self, message: SweepProgress) -> None:
        if message.generation != self.generation:
            return
        self.query_one("#sweep-job", JobBar).step(message.text, len(message.rows))
        if message.rows:
            self._sweep_latest = (message.rows, message.source)  # drawn by the timer, at most 4 times a second

    def _draw_sweep(self) -> None:
        if self._sweep_latest is not None:
            rows, source = self._sweep_latest
            self._sweep_latest = None
            self._show_sweep(rows, source)

    def on_inspector_screen_sweep_done(self, message: SweepDone) -> None:
        if message.generation != self.generation:
            return
        self._sweeping = False
        self._sweep_latest = None
        self.query_one("#sweep-job", JobBar).finish()
        if message.rows:
            self._show_sweep(message.rows, message.source)
        if message.error:
            self.notify(message.error, title="Sweep failed", severity="error")
        else:
            self.notify(f"{len(message.rows)} ratios evaluated on {message.source}", title="Sweep done")

    def _show_sweep(self, rows: list[dict[str, Any]], source: str) -> None:
        self.sweep_rows, self.sweep_source = rows, source
        plot = self.query_one("#sweep", SweepPlot)
        plot.display = True
        plot.current = self.current_ratio()
        plot.set_rows(rows, source)
        note = self.query_one("#sweep-note", Static)
        note.display = True
        note.update(f"sweep data: {source}")

