"""The project's one-line errors for wrong inputs.

Every wrong data file or checkpoint raises one of these, a :class:`ValueError` whose message is
one line naming the file and what is wrong (and, where it helps, how to fix it); the command
line and the workflow print it as such.
"""

from __future__ import annotations

__all__ = ["DataFormatError", "CheckpointError", "one_line"]


class DataFormatError(ValueError):
    """A data file does not follow the expected layout; the message names the file and the problem."""


class CheckpointError(DataFormatError):
    """A checkpoint cannot be used: unreadable, unverified, of another kind, or trained for another
    problem than the one at hand; the message names the checkpoint."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message (or its class name), at most ``limit`` characters."""
    if isinstance(exc, KeyError) and exc.args:
        text = [f"missing key {exc.args[0]!r}"]
    else:
        text = str(exc).strip().splitlines()
    msg = text[0] if text else exc.__class__.__name__
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"
