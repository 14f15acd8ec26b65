"""Exceptions whose message is meant for the user: what is wrong, and how to fix it."""


class SlimlabError(Exception):
    """An error with a message meant for the user: what is wrong and how to fix it."""


class PresetError(SlimlabError):
    """A preset or override that does not validate (exit code 2)."""


class DataError(SlimlabError):
    """A dataset that is missing or malformed."""


class ModelError(SlimlabError):
    """An unknown architecture or bad constructor arguments."""


class CheckpointError(SlimlabError):
    """A checkpoint that cannot be read or does not match its architecture."""


class NeedsTrust(SlimlabError):
    """Going on would run code from a file that the user has not vouched for.

    `kind` is "pickle" (the file holds pickled objects) or "arch" (it names a `module:Class`
    to build); `arch` and `kwargs` are what a confirmation must show, `source` the file."""

    def __init__(self, message: str, *, kind: str, arch: str | None = None, kwargs: dict | None = None,
                 source: str | None = None, names: list[str] | None = None):
        super().__init__(message)
        self.kind, self.arch, self.kwargs, self.source = kind, arch, dict(kwargs or {}), source
        self.names = list(names or [])  # for a pickle: the module.Class names it imports


class UntrustedCheckpoint(NeedsTrust, CheckpointError):
    """A checkpoint that needs trust to load (pickled code, or an architecture it names)."""


class PruneError(SlimlabError):
    """A plan, threshold or model that cannot be pruned as asked."""


class DistillError(SlimlabError):
    """A teacher, student or feature tap that cannot be used as asked."""


class DeployError(SlimlabError):
    """An export, quantization or compression that cannot be done or checked as asked."""


class RunError(SlimlabError):
    """A run that failed while training (non-finite loss, ...).

    `settings`: `--set KEY=VALUE` items that address the cause, for the resume command shown."""

    def __init__(self, message: str, settings: list[str] | None = None):
        super().__init__(message)
        self.settings = list(settings or [])


class RunBusy(SlimlabError):
    """A run directory that another live process is writing."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


class Cancelled(Exception):
    """A run stopped by SIGINT/SIGTERM at a step boundary."""
