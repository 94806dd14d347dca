"""The one exception type that the CLI turns into a clear message instead of a traceback."""


class DigitnetError(Exception):
    """A problem the user can fix: bad input, a missing file, a wrong reference.

    The message names the file or field and says what was expected.
    """
