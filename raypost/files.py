"""Files the CLI writes: whole or not at all, and one line naming the flag when they cannot be.

Every output goes to a temporary file beside its target and is renamed into place, so a crash,
a full disk or Ctrl-C never leaves half a file; folders are checked before the work that fills
them starts, so minutes of evaluation are not lost to an unwritable ``--out``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from raypost.errors import ConfigError


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file beside it and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def writable_dir(path: str | Path, flag: str) -> Path:
    """Check, without creating anything, that ``path`` is a folder raypost can create or write
    into: its nearest existing ancestor must be a writable folder. Else ConfigError naming ``flag``."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{flag} {path}: cannot write there ({probe} is a file, not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: cannot write there ({probe} is not writable)")
    return path


def write_output(path: str | Path, text: str, flag: str) -> Path:
    """One output file of a command, atomically; an unwritable path is one line naming ``flag``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file path")
    writable_dir(path.parent, flag)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(path, text)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot write ({exc.strerror or exc})") from None
