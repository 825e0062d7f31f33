"""What status.json holds: one typed record, written only through `Run.update_status`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

STATES = ("queued", "running", "done", "failed", "stopped")
ACTIVE_STATES = ("queued", "running")
MODEL_FILE_STATES = ("writing", "ready", "failed")


@dataclass
class RunStatus:
    state: str = "queued"
    phase: str = "queued"
    progress: float = 0.0            # 0..1 within the current phase
    message: str = ""
    step: float | None = None        # progress in the phase's own unit (images, epochs) …
    total: float | None = None       # … out of this many
    created_at: float | None = None  # the click: the run folder was made (every time shown is from here)
    updated_at: float | None = None
    started_at: float | None = None  # it got the training slot and began (after any wait in the queue)
    phase_started_at: float | None = None
    finished_at: float | None = None  # results on disk (done), or the end of a failed/stopped run
    pid: int | None = None           # the process executing it, with its kernel start time (a recycled pid is
    pid_start: str | None = None     # not mistaken for it)
    executor: str | None = None      # what executes it: "warm worker", "in-process" (the CLI), "ray", …
    host: str | None = None          # the machine `pid` lives on (its hostname): only there can the pid be checked
    node: str | None = None          # where it runs, for people: "this machine", or a Ray node's address
    error: str | None = None         # why it failed, in words a user can act on
    val_accuracy: float | None = None
    model_file: str | None = None    # writing | ready | failed: a bottleneck run's model.keras follows its results
    model_error: str | None = None
    model_written_at: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunStatus:
        """Tolerant of keys written by older or newer versions: unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def busy(self) -> bool:
        """A process should still be at work on this run: training it, or writing its model file."""
        return self.active or self.model_file == "writing"

    def seconds_from_click(self, now: float) -> float | None:
        """What the user waited: from the run's creation (the click) to its results (or to now, while active)."""
        if self.created_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else (now if self.active else None)
        return None if end is None else max(0.0, end - self.created_at)

    def breakdown(self, phase_seconds: dict[str, float] | None) -> dict[str, float]:
        """Where the time from the click went: waiting (for the engine or another training), each phase of the
        training, and how long after the results the model file followed."""
        out: dict[str, float] = {}
        if self.created_at is not None and self.started_at is not None:
            out["waiting"] = max(0.0, self.started_at - self.created_at)
        out.update(phase_seconds or {})
        if self.model_written_at is not None and self.finished_at is not None:
            out["model file, after the results"] = max(0.0, self.model_written_at - self.finished_at)
        return out


FIELD_NAMES = frozenset(f.name for f in fields(RunStatus))
