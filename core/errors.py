"""The one base of every error the app and the command line explain to a user.

Each module raises its own subclass (DatasetError, TrainingError, …) with a message a user can act on; callers
that only need "ours or not" catch `FewShotError`: the CLI exits 2 with the message, pages show it with
`st.error`, the run process records it verbatim as the run's error.
"""
from __future__ import annotations


class FewShotError(Exception):
    """An error whose message is meant for the user: bad input, a missing file, a run that cannot start."""
