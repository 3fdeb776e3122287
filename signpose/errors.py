"""The one error type the command line shows as a message instead of a traceback.

A :class:`UserError` is a mistake the user can fix (a missing file, a bad flag value, an unknown
model URI, a server that does not answer): ``signpose`` prints it as one line on stderr, naming the
thing and what to do, and exits 2. Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix; the message names the file/field/flag and what to do."""
