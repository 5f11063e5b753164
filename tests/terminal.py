"""Start a command as a terminal would: with SIGINT and SIGTERM at their defaults.

A child process inherits ignored and blocked signals from its parent, and a test worker's may
differ from a shell's (a library it ran may have left SIGINT ignored), so tests that press
Ctrl-C on a real `vae-zoo` process start it through `terminal_signals`.
"""

import signal


def terminal_signals() -> None:
    """`preexec_fn` for subprocess.Popen: SIGINT and SIGTERM unblocked and at SIG_DFL (Python
    then turns SIGINT into KeyboardInterrupt, as in a terminal)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
