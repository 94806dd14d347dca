"""The one exception type that the CLI turns into a clear message instead of a traceback, and
the first line of another library's error for quoting in one."""


class DigitnetError(Exception):
    """A problem the user can fix: bad input, a missing file, a wrong reference.

    The message names the file or field and says what was expected.
    """


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
