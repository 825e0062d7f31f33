"""Labelling: every change to a dataset is a file move, journalled, undoable, and safe against a crash.

One job per module:
* `places`: where things are in a dataset (classes, pool, bookkeeping) and whether the app may change it;
* `journal`: the journalled move / undo / trash engine and its crash recovery (the details are its docstring);
* `actions`: what a user asks (assign, unlabel, delete, upload to the pool) as journalled moves;
* `copies`: editable copies of read-only datasets (the built-in demo), and finding an image in one;
* `view`: what the Label page lists;
* `suggestions`: a trained run's suggestions for the unlabelled pool.

Only datasets inside the workspace can be changed (`core.workspace.ensure_writable`); the built-in demo is
read-only (`make_editable_copy`). Pages import what they need from here.
"""
from __future__ import annotations

from core.labeling.actions import add_unlabelled_uploads, delete_images, move_to_class, move_to_pool
from core.labeling.copies import counterpart, make_editable_copy, origin_of, working_copy
from core.labeling.journal import (
                                   Op,
                                   TrashItem,
                                   can_undo,
                                   history,
                                   in_trash,
                                   locate,
                                   recover,
                                   restore_from_trash,
                                   trash_items,
                                   undo,
)
from core.labeling.places import (
                                   LabelingError,
                                   class_folder,
                                   editable_root,
                                   journal_path,
                                   label_of,
                                   meta_dir,
                                   pool_folder,
                                   trash_dir,
)
from core.labeling.suggestions import accept_predictions, order_pool, predict_pool, suggestion_runs, suggestions_by_path
from core.labeling.view import LabelView, label_view, unlabelled_images
from core.workspace import is_demo, is_editable

__all__ = [
    "LabelView", "LabelingError", "Op", "TrashItem", "accept_predictions", "add_unlabelled_uploads", "can_undo",
    "class_folder", "counterpart", "delete_images", "editable_root", "history", "in_trash", "is_demo",
    "is_editable", "journal_path", "label_of", "label_view", "locate", "make_editable_copy", "meta_dir",
    "move_to_class", "move_to_pool", "order_pool", "origin_of", "pool_folder", "predict_pool", "recover",
    "restore_from_trash", "suggestion_runs", "suggestions_by_path", "trash_dir", "trash_items", "undo",
    "unlabelled_images", "working_copy",
]
