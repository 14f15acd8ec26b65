"""Exporter and quantizer chatter (progress prints, warnings, log records) routed into the run log.

torch.onnx, onnxscript and onnxruntime's quantizer print progress lines and raise warnings that
mean nothing to a slimlab user on the terminal; what matters goes to the run's log instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator

LOGGERS = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir", "onnxruntime", "root")
ESC = "\x1b"  # terminal control: a live progress display writing while stdout is captured
_logged: set[str] = set()  # a line is logged once per process: the exporter repeats itself on every call


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")


@contextlib.contextmanager
def quiet(log: Callable[[str], None] | None = None, what: str = "export") -> Iterator[None]:
    """Capture stdout, warnings and warning-level log records; hand each distinct line to `log`."""
    lines: list[str] = []
    handler = _Collect(lines)
    saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
    for name in LOGGERS:
        # torch installs its own stderr handlers on some of these: they are set aside, not added to
        logger = logging.getLogger() if name == "root" else logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate))
        logger.handlers = [handler]
        if name != "root":
            logger.propagate = False
    out = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
            warnings.simplefilter("always")
            yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate
        text = out.getvalue()
        lines[:0] = [ln.strip() for ln in text.splitlines() if ln.strip() and ESC not in ln]
        lines.extend(f"warning: {w.category.__name__}: {w.message}" for w in caught)
        if log is not None:
            for line in lines:
                if line not in _logged:
                    _logged.add(line)
                    log(f"{what}: {line}")
