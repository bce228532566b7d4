"""How many steps each compiled chunk of ``inferax.sample`` and of the training loop
(``inferax.training.train``) runs.

A chunk program loops over a step count given at run time, into buffers of a length fixed
when it compiles; the host loop picks each chunk's count. An explicit ``chunk_size`` fixes
both. By default (``chunk_size=None``) the buffers are a power of two long, so that runs of
similar lengths share one program, and each chunk runs as many steps as fit in about
``TARGET_CHUNK_SECONDS`` at the step time measured on the chunks before: cheap steps go in
long chunks, whose host round trip costs little beside them, and the progress bar and
checkpoints still move a few times a second.
"""

from __future__ import annotations

TARGET_CHUNK_SECONDS = 0.2
"""The run time of one chunk that the automatic chunk length aims at."""

FIRST_CHUNK_STEPS = 16
"""Steps in the first automatic chunk, which measures the step time."""

MAX_GROWTH = 16
"""An automatic chunk runs at most this many times the steps of the one before, so that one
fast chunk (a cheap warmup step, say) does not make the next one run for minutes."""

MIN_BUFFER_LENGTH = 1024
"""The shortest automatic buffer: runs of up to this many steps in a phase share one
program, whatever their length."""

MAX_BUFFER_LENGTH = 2**16
"""The longest automatic chunk, in kept draws or warmup steps."""

MAX_BUFFER_BYTES = 64 * 2**20
"""The most a sampling chunk's draw buffers take with the automatic length."""


def buffer_length(chunk_size: int | None, num_steps: int, *, bytes_per_step: int = 0) -> int:
    """The length of a phase's chunk program: ``chunk_size`` where it is given; otherwise
    the power of two at or above ``num_steps`` and ``MIN_BUFFER_LENGTH``, at most
    ``MAX_BUFFER_LENGTH`` and within ``MAX_BUFFER_BYTES`` of buffers at ``bytes_per_step``
    each."""
    if chunk_size is not None:
        return chunk_size
    cap = MAX_BUFFER_LENGTH
    if bytes_per_step > 0:
        cap = min(cap, max(1, MAX_BUFFER_BYTES // bytes_per_step))
    cap = 1 << (cap.bit_length() - 1)
    wanted = max(num_steps, MIN_BUFFER_LENGTH)
    return min(cap, 1 << max(0, wanted - 1).bit_length())


class ChunkSizer:
    """Picks each chunk's step count from the step times measured so far.

    Args:
      chunk_size: a fixed count, or ``None`` for the automatic one.
    """

    def __init__(self, chunk_size: int | None):
        self.chunk_size = chunk_size
        self.seconds_per_step: float | None = None
        self.last_steps = 0

    def next_count(self, remaining: int, length: int, steps_per_item: int = 1) -> int:
        """The items (steps, or kept draws of ``steps_per_item`` steps) of the next chunk:
        at most ``remaining`` and the program's ``length``."""
        if self.chunk_size is not None:
            return min(self.chunk_size, remaining, length)
        if self.seconds_per_step is None:
            steps = FIRST_CHUNK_STEPS
        else:
            steps = TARGET_CHUNK_SECONDS / max(self.seconds_per_step, 1e-9)
            steps = min(steps, MAX_GROWTH * max(self.last_steps, 1))
        return int(max(1, min(steps // steps_per_item, remaining, length)))

    def record(self, steps: int, seconds: float) -> None:
        """Notes that a chunk ran ``steps`` steps in ``seconds``."""
        self.last_steps = steps
        if steps > 0 and seconds > 0:
            self.seconds_per_step = seconds / steps


__all__ = [
    "FIRST_CHUNK_STEPS",
    "MAX_BUFFER_BYTES",
    "MAX_BUFFER_LENGTH",
    "MAX_GROWTH",
    "MIN_BUFFER_LENGTH",
    "TARGET_CHUNK_SECONDS",
    "ChunkSizer",
    "buffer_length",
]
