"""Class-folder datasets: scan, validate, split, import.

Two layouts are read:
* flat: `ROOT/<class>/*`; the engine makes a stratified, seeded train/validation(/test) split;
* split: `ROOT/train/<class>`, `ROOT/validation/<class>` (`val`, `valid`), optionally `ROOT/test/<class>`.
A `.zip` of either (with or without one top folder) is unpacked first. The label of an image is the folder it sits
in: the data on disk is the source of truth. Bad files are skipped and reported, never fatal.
"""
from __future__ import annotations

from core.errors import FewShotError
import hashlib
import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core import images

SPLITS = ("train", "val", "test")
SPLIT_FOLDER_NAMES = {"train": "train", "training": "train", "validation": "val", "val": "val", "valid": "val",
                      "test": "test", "testing": "test"}
# Folders inside a dataset that are never classes: the labelling pool and the app's own bookkeeping.
RESERVED_FOLDERS = {"unlabelled", "unlabeled", "_trash"}
CLASS_NAME_RE = re.compile(r"^[\w][\w .\-()+,&']{0,63}$", re.UNICODE)

# Zip limits: a hostile archive must not fill the disk or the inode table.
MAX_ZIP_MEMBERS = 20_000
MAX_ZIP_BYTES = 2 * 1024**3
MAX_ZIP_RATIO = 200  # uncompressed/compressed per member; real JPEGs are ~1


class DatasetError(FewShotError):
    """A dataset that cannot be trained on; the message says what to change."""


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    split: str  # "train" | "val" | "test"


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass
class Dataset:
    root: Path
    layout: str  # "flat" | "split"
    classes: list[str]
    items: list[Item]
    skipped: list[Skipped] = field(default_factory=list)

    def split(self, name: str) -> list[Item]:
        return [item for item in self.items if item.split == name]

    def label_index(self, label: str) -> int:
        return self.classes.index(label)

    def counts(self) -> pd.DataFrame:
        """Images per class (rows) and split (columns), with a total column."""
        frame = pd.DataFrame(0, index=self.classes, columns=list(SPLITS), dtype=int)
        for item in self.items:
            frame.loc[item.label, item.split] += 1
        if not frame["test"].any():
            frame = frame.drop(columns="test")
        frame["total"] = frame.sum(axis=1)
        frame.index.name = "class"
        return frame

    def summary(self) -> dict:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "classes": self.classes,
            "counts": {c: {s: int(v) for s, v in row.items()} for c, row in self.counts().iterrows()},
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skipped],
        }


# ---------------------------------------------------------------------------------------------- scanning


_check_cache: dict[tuple[str, int, int], str | None] = {}
NOT_TEXT_REASON = "its name is not valid UTF-8 text (an old archive or disk?): rename it to use it"


def _is_text(name: str) -> bool:
    """False for names holding bytes that are not UTF-8 (Python keeps them as lone surrogates, which every
    later step that writes text — JSON, CSV, the browser — would choke on)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(path: Path) -> Path:
    """`path` with undecodable bytes shown as U+FFFD: for the skipped list only (it names no real file)."""
    return Path(os.fsencode(path).decode("utf-8", "replace"))


def _check_cached(path: Path, st: "os.stat_result") -> str | None:  # noqa: F821
    """check_image, memoised on (path, size, mtime) so the UI can rescan every rerun for free."""
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _check_cache:
        _check_cache[key] = images.check_image(path)
    return _check_cache[key]


def scan_class_folder(folder: Path, check: bool = True) -> tuple[list[Path], list[Skipped]]:
    """Usable image files under `folder` (recursively, sorted) and the files skipped, with reasons."""
    good: list[Path] = []
    skipped: list[Skipped] = []
    for path in sorted(folder.rglob("*")):
        rel_parts = path.relative_to(folder).parts
        if any(images.is_hidden(part) for part in rel_parts[:-1]):
            continue  # inside a hidden folder (e.g. __MACOSX/, .fewshot/): not part of the dataset
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # moved or deleted since the listing (the Label page relabelling while a run scans)
        if stat.S_ISDIR(st.st_mode):
            continue
        name = path.name
        if not _is_text(str(path.relative_to(folder))):
            skipped.append(Skipped(_printable(path), NOT_TEXT_REASON))
        elif stat.S_ISLNK(st.st_mode):
            skipped.append(Skipped(path, "symbolic link (not followed)"))
        elif images.is_hidden(name):
            skipped.append(Skipped(path, "hidden or system file"))
        elif not stat.S_ISREG(st.st_mode):
            skipped.append(Skipped(path, "not a regular file"))
        elif not images.has_image_extension(name):
            if not images.is_sidecar(name):
                skipped.append(Skipped(path, f"not an image file ({path.suffix or 'no extension'})"))
        elif check and (reason := _check_cached(path, st)) is not None:
            skipped.append(Skipped(path, reason))
        else:
            good.append(path)
    return good, skipped


def class_folders(root: Path) -> list[Path]:
    """The class (or split) folders directly in `root`: real folders, not hidden, reserved or unreadable names."""
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.is_symlink() and not images.is_hidden(p.name)
                  and p.name.lower() not in RESERVED_FOLDERS and _is_text(p.name))


def _untextual_folders(root: Path) -> list[Skipped]:
    return [Skipped(_printable(p), NOT_TEXT_REASON) for p in sorted(root.iterdir())
            if p.is_dir() and not _is_text(p.name)]


def detect_layout(root: Path) -> dict[str, Path] | None:
    """{'train': path, 'val': path, 'test': path?} for the split layout, None for the flat one."""
    found: dict[str, Path] = {}
    for child in class_folders(root):
        split = SPLIT_FOLDER_NAMES.get(child.name.lower())
        if split:
            found.setdefault(split, child)
    if "train" in found and "val" in found:
        return found
    if "train" in found:
        # `train/` alone: the user meant the split layout but the validation folder is missing or misnamed.
        raise DatasetError(f"{root} has a 'train' folder but no 'validation' (or 'val', 'valid') folder beside it.")
    return None


def find_dataset_root(path: Path) -> Path:
    """Descend through a single wrapping folder (zips often have one), ignoring litter like __MACOSX."""
    current = path
    for _ in range(3):
        children = class_folders(current)
        files = [p for p in current.iterdir() if p.is_file() and images.has_image_extension(p.name)]
        if len(children) == 1 and not files and detect_layout(current) is None:
            current = children[0]
        else:
            break
    # The descent went one level too far if it landed in a class folder of a single-class dataset.
    return current if class_folders(current) else path


def stable_rank(seed: int, path: Path) -> str:
    """An image's place in its class's shuffled order: a hash of the seed and its file name.

    Ranking by name (not by position in a shuffled list) keeps every image in its split when other images are
    added, removed or relabelled, so a retrain after a fix is compared on (almost) the same validation set.
    """
    return hashlib.sha1(f"{seed}:{path.name}".encode()).hexdigest()


def split_counts(n: int, val_split: float, test_split: float) -> tuple[int, int]:
    """(n_val, n_test) for a class of n images; at least one training image always remains."""
    n_test = round(n * test_split)
    n_val = round(n * val_split)
    if test_split > 0 and n_test == 0 and n >= 3:
        n_test = 1
    if val_split > 0 and n_val == 0 and n >= 2:
        n_val = 1
    while n_val + n_test >= n and (n_val or n_test):
        if n_test >= n_val and n_test:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def _stratified_split(files: dict[str, list[Path]], val_split: float, test_split: float, seed: int) -> list[Item]:
    items: list[Item] = []
    for label, paths in files.items():
        ordered = sorted(paths, key=lambda p: (stable_rank(seed, p), str(p)))
        n_val, n_test = split_counts(len(ordered), val_split, test_split)
        for i, path in enumerate(ordered):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            items.append(Item(path, label, split))
    return sorted(items, key=lambda it: (it.label, natural_key(it.path)))


def natural_key(path: Path) -> list:
    """fish2 before fish10: how people number their photos."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def scan_dataset(data: str | Path, val_split: float = 0.2, test_split: float = 0.0, seed: int = 0,
                 check_images: bool = True) -> Dataset:
    """Read a dataset folder or zip into a `Dataset`, or raise `DatasetError` saying what to fix."""
    if not 0.0 <= val_split < 1.0 or not 0.0 <= test_split < 1.0 or val_split + test_split >= 1.0:
        raise DatasetError(f"val_split ({val_split}) and test_split ({test_split}) must be in [0, 1) and sum below 1.")
    path = Path(data).expanduser()
    if not path.exists():
        raise DatasetError(f"{path} does not exist.")
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise DatasetError(f"{path} is a file; give a folder of class folders or a .zip of one.")
        from core.workspace import imports_dir
        path = unpack_zip_cached(path, imports_dir())
    root = find_dataset_root(path.resolve())
    layout = detect_layout(root)
    if layout is None:
        return _scan_flat(root, val_split, test_split, seed, check_images)
    return _scan_split(root, layout, check_images)


def _scan_flat(root: Path, val_split: float, test_split: float, seed: int, check: bool) -> Dataset:
    files: dict[str, list[Path]] = {}
    skipped: list[Skipped] = _untextual_folders(root)
    for folder in class_folders(root):
        good, bad = scan_class_folder(folder, check)
        files[folder.name] = good
        skipped += bad
    _validate_classes(root, {"train": files})
    items = _stratified_split(files, val_split, test_split, seed)
    return Dataset(root, "flat", sorted(files), items, skipped)


def _scan_split(root: Path, layout: dict[str, Path], check: bool) -> Dataset:
    per_split: dict[str, dict[str, list[Path]]] = {}
    skipped: list[Skipped] = []
    for split, folder in layout.items():
        per_split[split] = {}
        skipped += _untextual_folders(folder)
        for class_folder in class_folders(folder):
            good, bad = scan_class_folder(class_folder, check)
            per_split[split][class_folder.name] = good
            skipped += bad
    _validate_classes(root, per_split)
    items = [Item(p, label, split) for split, files in per_split.items() for label, paths in files.items()
             for p in paths]
    classes = sorted(per_split["train"])
    return Dataset(root, "split", classes, sorted(items, key=lambda it: (it.label, natural_key(it.path))), skipped)


def _validate_classes(root: Path, per_split: dict[str, dict[str, list[Path]]]) -> None:
    train = per_split["train"]
    if len(train) < 2:
        found = f"only {sorted(train)}" if train else "no class folders"
        raise DatasetError(f"'{root.name}': found {found}. A classifier needs at least 2 class folders of images, "
                           f"like {root.name}/cats/*.jpg and {root.name}/dogs/*.jpg.")
    for split, files in per_split.items():
        empty = sorted(label for label, paths in files.items() if not paths)
        if empty:
            where = "" if len(per_split) == 1 else f" in '{split}'"
            raise DatasetError(f"class {', '.join(map(repr, empty))}{where} has no usable image. Add images or "
                               f"remove the folder.")
        if split != "train" and set(files) != set(train):
            missing = sorted(set(train) - set(files))
            extra = sorted(set(files) - set(train))
            parts = ([f"missing from '{split}': {missing}"] if missing else []) + \
                    ([f"only in '{split}': {extra}"] if extra else [])
            raise DatasetError(f"the class folders of 'train' and '{split}' differ ({'; '.join(parts)}). "
                               f"Every split needs the same classes.")


def dataset_warnings(ds: Dataset, few: int = 10, imbalance: float = 3.0) -> list[str]:
    """Problems worth fixing before training, each phrased as what to do."""
    counts = ds.counts()
    notes: list[str] = []
    totals = counts["total"]
    small = totals[totals < few]
    if len(small):
        notes.append(f"Few images in {', '.join(f'{c} ({n})' for c, n in small.items())}: "
                     f"add some if you can; {few}+ per class gives steadier results.")
    if totals.min() and totals.max() / totals.min() >= imbalance:
        notes.append(f"Unbalanced classes: {totals.idxmax()} has {totals.max()} images, {totals.idxmin()} only "
                     f"{totals.min()}. Training weights classes to compensate (class weights 'balanced').")
    if "val" in counts:
        no_val = counts.index[counts["val"] == 0].tolist()
        if no_val:
            notes.append(f"No validation image for {', '.join(no_val)}: their accuracy cannot be measured.")
    if ds.skipped:
        notes.append(f"{len(ds.skipped)} file(s) skipped (unreadable or not images): see the list below.")
    return notes


# ---------------------------------------------------------------------------------------------- zips


def unpack_zip_cached(zip_path: Path, parent: Path) -> Path:
    """Unpack once per zip content into `parent/<stem>-<hash>`; a second call reuses it."""
    digest = images.content_hash(zip_path)[:12]
    dest = parent / f"{safe_name(zip_path.stem) or 'dataset'}-{digest}"
    if not dest.exists():
        safe_extract_zip(zip_path, dest)
    return dest


def safe_extract_zip(zip_path: Path, dest: Path, max_members: int = MAX_ZIP_MEMBERS,
                     max_bytes: int = MAX_ZIP_BYTES) -> list[str]:
    """Extract a zip that nobody vouches for. Returns the notes on members it left out.

    Refused whole: not a zip, too many members, too many bytes once unpacked. Left out with a note: absolute or
    `../` paths (zip-slip), symlinks, nested zips, litter. Kept under a free name, with a note: an entry whose name
    another entry already has (nothing is overwritten). Extraction goes to a temporary folder renamed at the end,
    so a failure leaves nothing half-written at `dest`.
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
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for member in members:
                note = _extract_member(archive, member, tmp)
                if note:
                    notes.append(note)
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return notes


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
    note = None
    if target.exists():  # a repeated entry, or names that differ only in characters safe_name replaced
        target = _free_name(target)
        note = f"{member.filename}: another entry has the same name; kept as {target.name}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # a file entry and a folder entry with one name ("a" and "a/b.jpg")
        return f"{member.filename}: its folder has the name of a file in the zip, left out"
    try:
        with archive.open(member) as src, open(target, "wb") as out:
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


def _free_name(path: Path) -> Path:
    """`name (2).jpg`, `name (3).jpg`…: the first that is not taken."""
    n = 2
    while (candidate := path.with_name(f"{path.stem} ({n}){path.suffix}")).exists():
        n += 1
    return candidate


# ---------------------------------------------------------------------------------------------- names


def safe_name(name: str, max_bytes: int = 150) -> str:
    """A file or folder name that cannot escape its folder or trip a shell: no separators, no control characters,
    no leading dots, valid UTF-8, at most `max_bytes` bytes (file systems allow 255) with its extension kept."""
    name = name.encode("utf-8", "ignore").decode("utf-8")
    name = Path(name.replace("\\", "/")).name
    name = re.sub(r"[\x00-\x1f/\\:*?\"<>|]", "_", name).strip()
    suffix = Path(name).suffix if len(Path(name).suffix) <= 16 else ""
    stem = name[: len(name) - len(suffix)].lstrip(".").strip()
    if not stem:
        return "_" + suffix if suffix else ""
    stem = stem.encode("utf-8")[: max_bytes - len(suffix.encode("utf-8"))].decode("utf-8", "ignore").rstrip()
    return stem + suffix


def validate_class_name(name: str) -> str:
    """Return the stripped class name, or raise DatasetError explaining what a class name may be."""
    cleaned = name.strip()
    if (not cleaned or not CLASS_NAME_RE.match(cleaned) or cleaned.lower() in RESERVED_FOLDERS
            or cleaned.lower() in SPLIT_FOLDER_NAMES):
        raise DatasetError(f"{name!r} is not a usable class name: use letters, digits, spaces, '-', '_' or '.', "
                           f"at most 64 characters, not starting with '.' and not one of "
                           f"{sorted(RESERVED_FOLDERS | set(SPLIT_FOLDER_NAMES))}.")
    return cleaned
