"""Zips that nobody vouches for: extracted safely (no zip-slip, no bombs, no symlinks), and unpacked once."""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

from core import fsutil, images
from core.datasets.dataset import DatasetError
from core.datasets.names import free_name, safe_name

# Zip limits: a hostile archive must not fill the disk or the inode table.
MAX_ZIP_MEMBERS = 20_000
MAX_ZIP_BYTES = 2 * 1024**3
MAX_ZIP_RATIO = 200  # uncompressed/compressed per member; real JPEGs are ~1


def unpack_zip_cached(zip_path: Path, parent: Path) -> Path:
    """Unpack once per zip content into `parent/<stem>-<hash>`; a later call reuses it.

    Two trainings on one zip take turns (an flock beside the folder): the second waits, then reuses the complete
    folder. A folder is reused only if its `.complete` marker says its unpack finished: one left by a killed
    process, or by an older version's race, is unpacked again."""
    digest = images.content_hash(zip_path)[:12]
    dest = parent / f"{safe_name(zip_path.stem) or 'dataset'}-{digest}"
    marker = dest.with_name(dest.name + ".complete")
    parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(dest.name + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process is killed
        if dest.is_dir() and marker.exists():
            return dest
        marker.unlink(missing_ok=True)
        for stale in parent.glob(f"{glob_escape(dest.name)}.partial*"):  # what a killed unpack was writing
            shutil.rmtree(stale, ignore_errors=True)
        safe_extract_zip(zip_path, dest)
        marker.touch()
    return dest


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def safe_extract_zip(zip_path: Path, dest: Path, max_members: int = MAX_ZIP_MEMBERS,
                     max_bytes: int = MAX_ZIP_BYTES) -> list[str]:
    """Extract a zip that nobody vouches for. Returns the notes on members it left out.

    Refused whole: not a zip, too many members, too many bytes once unpacked. Left out with a note: absolute or
    `../` paths (zip-slip), symlinks, nested zips, litter. Kept under a free name, with a note: an entry whose name
    another entry already has (nothing is overwritten). Extraction goes to a private temporary folder (one per
    call: two extractions never share it) renamed at the end, so `dest` only ever holds a complete unpack and a
    failure leaves nothing half-written there. An existing `dest` is replaced.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{Path(zip_path).name} is not a readable zip file ({exc}).") from None
    notes: list[str] = []
    with archive:
        members = archive.infolist()
        if len(members) > max_members:
            raise DatasetError(f"the zip has {len(members)} entries; the limit is {max_members}.")
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            raise DatasetError(f"the zip would unpack to {total / 1e9:.1f} GB; the limit is {max_bytes / 1e9:.1f} GB.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = fsutil.temp_folder(dest.parent, f"{dest.name}.partial-")
        try:
            for member in members:
                note = _extract_member(archive, member, tmp)
                if note:
                    notes.append(note)
            _replace_folder(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return notes


def _replace_folder(new: Path, dest: Path) -> None:
    """Rename `new` to `dest`; an existing `dest` is first renamed aside, then removed."""
    while True:
        try:
            os.rename(new, dest)
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        aside = Path(tempfile.mkdtemp(prefix=f"{dest.name}.old-", dir=dest.parent))
        try:
            os.rename(dest, aside / "old")
        except FileNotFoundError:  # someone else moved it meanwhile: try again
            pass
        shutil.rmtree(aside, ignore_errors=True)


def _path_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 4096


def _extract_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, dest: Path) -> str | None:
    name = member.filename.replace("\\", "/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        return f"{member.filename}: unsafe path, left out"
    if not parts or member.is_dir():
        return None
    if any(images.is_hidden(p) or p == "__MACOSX" for p in parts):
        return None
    mode = member.external_attr >> 16
    if stat.S_ISLNK(mode):
        return f"{member.filename}: symbolic link, left out"
    if member.flag_bits & 0x1:
        return f"{member.filename}: encrypted, left out"
    if parts[-1].lower().endswith(".zip"):
        return f"{member.filename}: zip inside a zip, left out"
    if member.compress_size and member.file_size / member.compress_size > MAX_ZIP_RATIO:
        return f"{member.filename}: compression ratio too high (zip bomb?), left out"
    target = dest.joinpath(*[safe_name(p) or "_" for p in parts])
    too_long = f"{member.filename[:80]}…: its path is too long for this system, left out"
    if len(os.fsencode(target)) >= _path_max(dest):
        return too_long
    note = None
    if target.exists():  # a repeated entry, or names that differ only in characters safe_name replaced
        target = free_name(target)
        note = f"{member.filename}: another entry has the same name; kept as {target.name}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file entry and a folder entry with one name ("a" and "a/b.jpg")
        if exc.errno == errno.ENAMETOOLONG:
            return too_long
        return f"{member.filename}: its folder has the name of a file in the zip, left out"
    try:
        out = open(target, "wb")
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return too_long
        raise
    try:
        with archive.open(member) as src, out:
            # Copy with a running byte count: the header's file_size can lie.
            written = 0
            for chunk in iter(lambda: src.read(1 << 20), b""):
                written += len(chunk)
                if written > member.file_size + (1 << 20):
                    raise DatasetError(f"{member.filename} unpacks to more than its header says; refusing the zip.")
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        # A damaged member (bad CRC, corrupt stream: zipfile never writes past the declared size) or an
        # unsupported compression method: drop what was written of it and go on with the others.
        target.unlink(missing_ok=True)
        return f"{member.filename}: damaged or unsupported ({exc}), left out"
    return note
