"""One exception type for every user-facing failure.

The CLI prints `error: <message>` on one line and exits non-zero; the message names the file or
value that is wrong. It lives in the runtime because the runtime must import without torch and
every stage shares it.
"""


class HybridError(Exception):
    """A problem with the user's input (a file, a value, a config), explained in one line."""
