"""Training settings: one typed dataclass, validated, round-tripping through JSON (it is saved with every run)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from core.augment import AugmentConfig, default_augment
from core.backbones import DEFAULT_BACKBONE
from core.errors import FewShotError

MODES = ("scratch", "bottleneck", "finetune")
MODE_HELP = {
    "scratch": "A small network learns from your pixels alone (the recipe's baseline; slow and less accurate).",
    "bottleneck": "A pretrained network describes each image once; a small classifier learns from those "
                  "descriptions in seconds. Best first choice.",
    "finetune": "Starts from the bottleneck classifier, then gently retrains the pretrained network's last block "
                "with augmentation. Slower; on four small datasets it added 0 to 5 points (about 2 on average), most "
                "on photos unlike everyday ones, and it keeps the bottleneck classifier when no epoch does better on "
                "validation.",
}
SCRATCH_INPUT_SIZE = 150  # the recipe's 150×150


class ConfigError(FewShotError):
    """A setting out of range; the message names the setting and what is allowed."""


@dataclass
class TrainConfig:
    # --- data
    data: str = ""                  # dataset folder or .zip
    val_split: float = 0.2          # fraction of each class held out for validation (flat layout only)
    test_split: float = 0.0         # fraction held out for a final test (flat layout only)
    seed: int = 0                   # same seed + same data → same split and same initial weights
    # --- model
    mode: str = "bottleneck"        # scratch | bottleneck | finetune
    backbone: str = DEFAULT_BACKBONE
    dense_units: int = 256          # the head's hidden layer (the recipe's 256)
    dropout: float = 0.5            # the recipe's 0.5
    # --- optimisation
    epochs: int = 30                # bottleneck head / scratch epochs (early stopping usually ends sooner)
    batch_size: int = 16
    lr: float = 1e-3                # Adam for the head and scratch
    finetune_epochs: int = 10
    finetune_lr: float = 1e-3       # SGD, momentum 0.9: the peak of a warm-up + cosine decay (the recipe: 1e-4 flat)
    class_weights: str = "balanced"  # "balanced" | "none"
    early_stopping: bool = True
    patience: int = 8               # epochs without val_loss improvement before stopping (best weights restored)
    augment_copies: int = 0         # bottleneck: K augmented copies of each training image, features cached too;
                                    # finetune on cached activations: K copies' activations (0: its default,
                                    # one per fine-tune epoch bar one, at most 9)
    from_run: str | None = None     # finetune: start from this bottleneck run's head
    finetune_full: bool = False     # finetune: whole images through the whole backbone every epoch (the old,
                                    # slower path) instead of the top block on cached activations
    augment: AugmentConfig = field(default_factory=default_augment)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig.from_dict(self.augment)
        checks = [
            (self.mode in MODES, "mode", f"one of {MODES}"),
            (0.0 <= self.val_split < 1.0, "val_split", "in [0, 1)"),
            (0.0 <= self.test_split < 1.0 and self.val_split + self.test_split < 1.0, "test_split",
             "in [0, 1), with val_split + test_split < 1"),
            (isinstance(self.seed, int) and 0 <= self.seed < 2**32, "seed", "a whole number 0..4294967295"),
            (1 <= self.epochs <= 1000, "epochs", "1..1000"),
            (0 <= self.finetune_epochs <= 1000, "finetune_epochs", "0..1000"),
            (1 <= self.batch_size <= 1024, "batch_size", "1..1024"),
            (0 < self.lr <= 1, "lr", "in (0, 1]"),
            (0 < self.finetune_lr <= 1, "finetune_lr", "in (0, 1]"),
            (0 <= self.dropout < 1, "dropout", "in [0, 1)"),
            (1 <= self.dense_units <= 4096, "dense_units", "1..4096"),
            (self.class_weights in ("balanced", "none"), "class_weights", "'balanced' or 'none'"),
            (0 <= self.patience <= 1000, "patience", "0..1000"),
            (0 <= self.augment_copies <= 50, "augment_copies", "0..50"),
            (isinstance(self.finetune_full, bool), "finetune_full", "true or false"),
        ]
        for ok, name, allowed in checks:
            if not ok:
                raise ConfigError(f"{name} = {getattr(self, name)!r} is not allowed: use {allowed}.")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["augment"] = self.augment.to_dict()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))

    def input_size(self) -> int:
        if self.mode == "scratch":
            return SCRATCH_INPUT_SIZE
        from core.backbones import get_backbone
        return get_backbone(self.backbone).input_size
