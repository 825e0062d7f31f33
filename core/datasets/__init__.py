"""Class-folder datasets: scan, validate, split, import.

Two layouts are read:
* flat: `ROOT/<class>/*`; the engine makes a stratified, seeded train/validation(/test) split;
* split: `ROOT/train/<class>`, `ROOT/validation/<class>` (`val`, `valid`), optionally `ROOT/test/<class>`.
A `.zip` of either (with or without one top folder) is unpacked first. The label of an image is the folder it sits
in: the data on disk is the source of truth. Bad files are skipped and reported, never fatal.

The modules: `dataset` (the Dataset record and its warnings), `scan` (class folders, layouts, the one image-file
walk and its checks), `split` (the seeded stratified split), `zips` (safe extraction), `names` (safe and valid
names), `importing` (bringing images into the workspace; imported on its own: `core.datasets.importing`).
"""
from core.datasets.dataset import SPLITS, Dataset, DatasetError, Item, Skipped, dataset_warnings
from core.datasets.names import (
                                 CLASS_NAME_RE,
                                 NOT_TEXT_REASON,
                                 RESERVED_FOLDERS,
                                 SPLIT_FOLDER_NAMES,
                                 free_name,
                                 safe_name,
                                 validate_class_name,
)
from core.datasets.scan import (
                                 class_folders,
                                 detect_layout,
                                 find_dataset_root,
                                 iter_image_files,
                                 scan_class_folder,
                                 scan_dataset,
)
from core.datasets.split import content_key, natural_key, split_position, split_share_note, stratified_split
from core.datasets.zips import MAX_ZIP_BYTES, MAX_ZIP_MEMBERS, MAX_ZIP_RATIO, safe_extract_zip, unpack_zip_cached

__all__ = [
    "CLASS_NAME_RE", "MAX_ZIP_BYTES", "MAX_ZIP_MEMBERS", "MAX_ZIP_RATIO", "NOT_TEXT_REASON", "RESERVED_FOLDERS",
    "SPLITS", "SPLIT_FOLDER_NAMES", "Dataset", "DatasetError", "Item", "Skipped", "class_folders",
    "dataset_warnings", "detect_layout", "find_dataset_root", "free_name", "iter_image_files", "natural_key",
    "safe_extract_zip", "safe_name", "scan_class_folder", "scan_dataset", "content_key", "split_position",
    "split_share_note", "stratified_split", "unpack_zip_cached", "validate_class_name",
]
