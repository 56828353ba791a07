"""The one error type users see: a single line naming the file or key and the fix."""


class AtreidError(Exception):
    """A user-facing problem (bad input, missing file, malformed params).

    The CLI prints ``error: <message>`` and exits with status 2, so the message must be
    one line that names what is wrong (file, key) and how to fix it.
    """
