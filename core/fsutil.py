"""Writes that a crash cannot leave half-done: write a temporary file beside the target, fsync, rename."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `target` in one rename.

    `suffix` keeps an extension some writers insist on (Keras only saves to names ending in `.keras`).
    On any error the temporary file is removed and the previous `target` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions a plain open() would
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temp_folder(parent: str | Path, prefix: str) -> Path:
    """A new folder of its own under `parent` (never shared with another caller), with the permissions a plain
    mkdir would give it (mkdtemp makes 0700), so it can be renamed into place as a normal folder."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~_UMASK)
    return path


def remove_temp_files(folder: str | Path) -> int:
    """Delete the temporary files `atomic_path` left under `folder` when its writer was killed (kill -9, power
    loss) between creating and renaming them. Call it only where no writer is active. Returns how many."""
    removed = 0
    # os.walk, not Path.rglob: the feature cache holds a file per photo, and every run looks (rglob took ~25-100 ms
    # on the demo's 122 entries, loaded; it grows with the cache).
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.startswith(".") and ".tmp" in name[1:]:  # the pattern ".*.tmp*"
                path = Path(parent) / name
                if path.is_file() and not path.is_symlink():
                    path.unlink(missing_ok=True)
                    removed += 1
    return removed


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | Path, data: object) -> None:
    atomic_write_text(target, json.dumps(data, indent=2, default=str) + "\n")


def overwrite_in_place(target: str | Path, data: bytes) -> bool:
    """Rewrite a small file in the space it already holds, for when nothing new can be allocated (a full disk): no
    temporary file, so not atomic: a crash mid-write can leave it torn, which its readers must tolerate. Returns
    False, writing nothing, when `data` does not fit in the file's allocated blocks."""
    target = Path(target)
    try:
        allocated = target.stat().st_blocks * 512
    except OSError:
        return False
    if len(data) > allocated:
        return False
    with open(target, "r+b") as fh:
        fh.write(data)
        fh.truncate(len(data))
        fh.flush()
        os.fsync(fh.fileno())
    return True


def read_json(path: str | Path, default: object = None) -> object:
    """The JSON in `path`, or `default` if the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def append_line(path: str | Path, line: str) -> None:
    """Append one line and make it durable before returning (a reader polling the file sees whole lines)."""
    append_lines(path, [line])


def append_lines(path: str | Path, lines: list[str]) -> None:
    """Append lines in one write and one fsync."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(line.rstrip("\n") + "\n" for line in lines))
        fh.flush()
        os.fsync(fh.fileno())
