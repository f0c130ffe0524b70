"""Writing JSON so that no reader ever sees half a file.

A unique temp file in the target's directory, fsync, then `os.replace`: readers see the
old file or the new one, and concurrent writers never interleave (the last one wins whole).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` whole: temp file, fsync, rename, fsync of the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; a baseline or report is for everyone to read
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def write_json(path: Path, obj: Any) -> None:
    """Sorted keys, one fact a line: diff-friendly and byte-stable for equal content."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")
