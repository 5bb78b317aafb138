"""Logging for pipeline steps: everything a step prints goes to its Snakemake log file.

A project error (a bad file, value or setting: :class:`ValueError` and its subclasses such as
``ConfigError`` and ``DataFormatError``, or :class:`FileNotFoundError`) ends the job with its one
line first: ``diffrecon: error: <message>`` is the first line of the log (what the step printed
and the traceback follow, for developers) and is written to stderr, where Snakemake's console
shows it. Other exceptions (bugs) keep their traceback at the end of the log.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from pathlib import Path

#: Exceptions whose message is meant for the user (one line says what is wrong with the data).
PROJECT_ERRORS = (ValueError, FileNotFoundError)


def error_line(exc: BaseException) -> str:
    """``diffrecon: error: <first line of the message>``."""
    text = str(exc).strip()
    if isinstance(exc, FileNotFoundError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return f"diffrecon: error: {text.splitlines()[0] if text else exc.__class__.__name__}"


@contextlib.contextmanager
def log_to(path):
    """Send logging, stderr (tqdm bars) and any traceback to ``path`` for the duration of the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        old_err = sys.stderr
        sys.stderr = fh
        try:
            yield
        except PROJECT_ERRORS as exc:
            line = error_line(exc)
            fh.flush()
            before = path.read_text()
            fh.seek(0)
            fh.truncate()
            fh.write(f"{line}\n{before}{traceback.format_exc()}")
            old_err.write(f"{line}\n")
            old_err.flush()
            raise
        except BaseException:
            fh.write(traceback.format_exc())
            raise
        finally:
            sys.stderr = old_err
            root.removeHandler(handler)
