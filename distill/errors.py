"""The one exception type the CLI turns into a short message and a non-zero exit."""


class DistillError(Exception):
    """A problem the user can fix: the message says what is wrong and how to fix it."""
