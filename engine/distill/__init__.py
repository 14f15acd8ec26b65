"""Knowledge distillation: teacher -> student losses, feature taps and adapters.

Import the submodules (``engine.distill.distiller``, ``.losses``, ``.taps``,
``.adapters``) directly; this package file stays torch-free so that
``import engine`` is cheap.
"""

__all__ = ["adapters", "distiller", "losses", "taps"]
