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


class PruneError(SlimlabError):
    """A plan, threshold or model that cannot be pruned as asked."""


class DistillError(SlimlabError):
    """A teacher, student or feature tap that cannot be used as asked."""


class RunError(SlimlabError):
    """A run that failed while training (non-finite loss, ...)."""


class Cancelled(Exception):
    """A run stopped by SIGINT/SIGTERM at a step boundary."""
