"""Errors that mean "the user asked for something we cannot do" (exit status 2, no traceback)."""


class UserError(Exception):
    """Bad input: a wrong key in a suite file, a missing dataset, an unknown model.

    The message says what is wrong and how to fix it; the CLI prints it alone and exits with 2.
    """
