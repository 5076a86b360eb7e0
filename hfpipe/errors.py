"""The errors users see as one line: bad input (exit code 2) and a diverged run (exit code 1)."""


class InputError(ValueError):
    """A recipe, option, file or checkpoint the user gave is not what hfpipe expects.

    The message is a single line naming the file, key or row and what was expected;
    the CLI prints it as ``hfpipe: error: <message>`` and exits with code 2 before any
    heavy work starts.
    """

    exit_code = 2


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run stops (its last checkpoint intact) and the CLI
    prints this one line instead of a traceback, exit code 1."""
