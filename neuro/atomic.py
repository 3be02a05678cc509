"""Atomic file writes: a reader (another thread, process or a later run) sees the old file or the new one,
never a part of either.

Every write goes to a temporary file with a fresh unique name in the target's own folder (so the final
`os.replace` is one rename on one file system, and two concurrent writers never share a temporary file),
then replaces the target; the temporary file is removed when the write fails. Temporary names are
`.<name>.<random>.tmp`, hidden and recognisable (a job folder's `remove_temporaries` sweeps `.*.tmp`).
The temporary file is created like `open(path, "w")` would create it (0666 less the umask), not 0600 as
`tempfile.mkstemp` would, so a replaced file keeps the permissions its readers expect; `mode` sets them
explicitly (e.g. 0644 for files that other uids read whatever the umask).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _fresh(path: Path, suffix: str) -> Path:
    """Create an empty temporary file beside `path` under a name no other writer has (O_EXCL)."""
    while True:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | os.PathLike, *, mode: int | None = None, fsync: bool = False,
              suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a new empty temporary file beside `path` for the caller (or a tool it runs) to fill; when the
    block ends cleanly it replaces `path` (after `chmod(mode)` and, with `fsync`, a flush to disk), and when
    it raises the temporary file is removed and `path` is left as it was. `suffix` ends the temporary
    name, for tools that look at the extension of their output."""
    path = Path(path)
    tmp = _fresh(path, suffix)
    try:
        yield tmp
        if mode is not None:
            tmp.chmod(mode)
        if fsync:
            _sync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when something failed


def write_bytes(path: str | os.PathLike, data: bytes, *, mode: int | None = None, fsync: bool = False) -> None:
    """Replace `path` with `data` atomically."""
    with replacing(path, mode=mode, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8", mode: int | None = None,
               fsync: bool = False) -> None:
    """Replace `path` with `text` atomically."""
    write_bytes(path, text.encode(encoding), mode=mode, fsync=fsync)


def write_json(path: str | os.PathLike, data, *, mode: int | None = None, fsync: bool = False, **dumps) -> None:
    """Replace `path` with `json.dumps(data, **dumps)` atomically (the text is made before anything is
    written, so data that cannot be serialized leaves `path` untouched)."""
    write_text(path, json.dumps(data, **dumps), mode=mode, fsync=fsync)
