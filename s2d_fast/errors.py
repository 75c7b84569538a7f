"""The one base class of the mistakes a user can fix.

Every error that a wrong config key, list row, file or checkpoint can cause derives from
`UserError`; the command line prints its message alone (one line, no traceback) and exits 1.
Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix; the message names the key, file or line and what is wrong."""
