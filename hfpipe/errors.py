"""The one error type users should see: bad input, reported in one line, exit code 2."""


class InputError(ValueError):
    """A recipe, option, file or checkpoint the user gave is not what hfpipe expects.

    The message is a single line naming the file, key or row and what was expected;
    the CLI prints it as ``hfpipe: error: <message>`` and exits with code 2 before any
    heavy work starts.
    """

    exit_code = 2
