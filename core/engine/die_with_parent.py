"""Run a command so that it dies with its parent, paused or not:

    python -m core.engine.die_with_parent PARENT_PID COMMAND [ARG ...]

The warm worker runs a deferred step that cannot give way (the export check) as a child process and pauses it
(SIGSTOP) while a run trains. Should the worker be killed meanwhile, nothing would ever resume or end that child:
it would sit stopped, holding a TensorFlow process's memory. Linux's PR_SET_PDEATHSIG makes the kernel send the
child SIGKILL when its parent dies (delivered even to a stopped process), and it survives the exec below. Set
here, in the child, rather than with Popen's `preexec_fn`, which is unsafe in a process with threads (the worker
has TensorFlow's). Where prctl is missing (not Linux) the command simply runs."""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
ARMED_FD_ENV = "FEWSHOT_ARMED_FD"  # the write end of a pipe the parent reads until it closes


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[1:]
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # no prctl here: the worker still ends its children when it exits normally
        pass
    if os.getppid() != parent:  # the parent died before the prctl took hold: nothing would end this process later
        return 1
    armed = os.environ.pop(ARMED_FD_ENV, None)
    if armed:  # tell the parent it may pause this process now: closing the pipe's write end is the message
        os.close(int(armed))
    os.execv(command[0], command)
    return 0  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
