"""One exception type for every user-facing failure.

The CLI prints `error: <message>` on one line and exits non-zero; the message names the file or
value that is wrong. It lives in the runtime because the runtime must import without torch and
every stage shares it.
"""

from numbers import Integral, Real


class HybridError(Exception):
    """A problem with the user's input (a file, a value, a config), explained in one line."""


def is_integer(x) -> bool:
    """An int or a numpy integer, but not a bool: what a count, a size or a seed may be."""
    return isinstance(x, Integral) and not isinstance(x, bool)


def is_number(x) -> bool:
    """An int, a float or a numpy number, but not a bool."""
    return isinstance(x, Real) and not isinstance(x, bool)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when empty), at most 200 characters."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else e.__class__.__name__
