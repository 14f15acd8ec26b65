"""Seeds derived from several integers, so (seed, epoch, rank) streams never overlap by accident."""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 64-bit seed that depends on every part (SeedSequence hashing, not addition)."""
    words = [int(p) % (1 << 64) for p in parts]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int(state[0]) | (int(state[1]) << 32)
