"""Start a command as a terminal would, and interrupt it once it has recorded its first run.

A child process inherits ignored and blocked signals from its parent, and a test worker's may
differ from a shell's (a library it ran may have left SIGINT ignored), so tests that press
Ctrl-C on a real `vae-zoo` process start it with SIGINT and SIGTERM at their defaults.
"""

import os
import signal
import subprocess
import time
from pathlib import Path


def terminal_signals() -> None:
    """`preexec_fn` for subprocess.Popen: SIGINT and SIGTERM unblocked and at SIG_DFL (Python
    then turns SIGINT into KeyboardInterrupt, as in a terminal)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)


def interrupt_after_first_run(command: list[str], runs: Path, send, *,
                              timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `command` in its own session, wait until a run directory under `runs` holds a
    metrics.json, call `send(pid)` (e.g. `lambda pid: os.killpg(pid, signal.SIGINT)`), and
    return its exit status and output (stdout and stderr together)."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=terminal_signals)
    try:
        deadline = time.monotonic() + timeout
        while not any(runs.glob("[!.]*/metrics.json")):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        send(process.pid)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, output)
