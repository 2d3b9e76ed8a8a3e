"""The exceptions that mean "the user's input is wrong", importable without any heavy library.

The command line prints a `UserError` as one paragraph and exits with status 2 (no traceback), so
these are for problems the user fixes (a setting, a path, a data file), never for bugs.
"""


class UserError(ValueError):
    """Input that cannot run as given; the message names the problem and the fix."""


class ConfigError(UserError):
    """A recipe configuration that cannot run; raised before any model is loaded."""
