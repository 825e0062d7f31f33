"""Where training progress goes: the run folder (for the UI) and, on the command line, the terminal.

Recording is kept apart from training: the training code calls `phase`, `progress`, `epoch` and `log`;
this class decides what to write and how often: status.json at most every 0.25 s, history.csv at most every 0.2 s
(the first epoch at once; what is left when a phase ends, when the run ends or fails). A head on cached features
runs an epoch every ~15 ms: an fsynced line per epoch cost more than the epoch.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

from core.runs import Run


class Reporter:
    def __init__(self, run: Run | None = None, terminal: TextIO | None = None, min_interval: float = 0.25,
                 history_interval: float = 0.2):
        self.run = run
        self.terminal = terminal
        self.min_interval = min_interval
        self.history_interval = history_interval
        self.history: list[dict] = []
        self._unwritten: list[dict] = []  # epochs not yet in history.csv
        self._history_written = 0.0
        self._last_write = 0.0
        self._phase = ""
        self._phase_started = time.time()
        self._bar_open = False
        self.phase_seconds: dict[str, float] = {}  # wall time per phase, for metrics.json and benchmarks

    # -------------------------------------------------------------------------------- what training calls
    def phase(self, name: str, message: str) -> None:
        self.flush_history()
        self._close_phase()
        self._phase, self._phase_started = name, time.time()
        self._end_bar()
        if self.run:
            self.run.update_status(phase=name, message=message, progress=0.0, phase_started_at=self._phase_started)
        self._last_write = time.time()

    def progress(self, done: float, total: float, message: str) -> None:
        fraction = min(1.0, done / total) if total else 1.0
        now = time.time()
        final = done >= total
        if self.run and (final or now - self._last_write >= self.min_interval):
            self.run.update_status(progress=round(fraction, 4), step=round(done, 3), total=total, message=message)
            self._last_write = now
        if self.terminal and self._phase == "extracting":
            self._draw_bar(done, total, message)

    def epoch(self, row: dict) -> None:
        self.history.append(row)
        if self.run:
            self._unwritten.append(row)
            if time.time() - self._history_written >= self.history_interval:
                self.flush_history()
        if self.terminal:
            self._end_bar()
            parts = [f"{row['stage']:>10} epoch {row['epoch']:3d}"]
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                if row.get(key) is not None:
                    parts.append(f"{key} {row[key]:.4f}")
            parts.append(f"{row['seconds']:.2f}s")
            print("  ".join(parts), file=self.terminal, flush=True)

    def log(self, message: str) -> None:
        self._end_bar()
        print(message, file=self.terminal or sys.stdout, flush=True)

    def _close_phase(self) -> None:
        if self._phase:
            elapsed = time.time() - self._phase_started
            self.phase_seconds[self._phase] = round(self.phase_seconds.get(self._phase, 0.0) + elapsed, 3)

    def flush_history(self) -> None:
        """Write the epochs not yet in history.csv."""
        if self.run and self._unwritten:
            self.run.append_history(*self._unwritten)
            self._unwritten.clear()
            self._history_written = time.time()

    def finish(self) -> dict[str, float]:
        """Close the current phase; returns seconds per phase."""
        self.flush_history()
        self._close_phase()
        self._phase = ""
        return self.phase_seconds

    def should_stop(self) -> bool:
        return bool(self.run and self.run.stop_requested())

    # -------------------------------------------------------------------------------- terminal drawing
    def _draw_bar(self, done: float, total: float, message: str) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        elapsed = time.time() - self._phase_started
        rate = done / elapsed if elapsed > 0 and done else 0.0
        line = f"\r{message.split(':')[0]} [{'#' * filled}{'.' * (width - filled)}] {int(done)}/{int(total)}"
        if rate:
            line += f" {rate:.1f} img/s"
        print(line, end="", file=self.terminal, flush=True)
        self._bar_open = True
        if done >= total:
            self._end_bar()

    def _end_bar(self) -> None:
        if self._bar_open and self.terminal:
            print(file=self.terminal, flush=True)
        self._bar_open = False
