"""The errors that mean "fix your input", as opposed to bugs: stages report them in one line.

Each module's own error class derives from UserError, so this module imports nothing: a stage that
catches user errors does not pay for importing every other stage's libraries (diffusers, timm).
"""


class UserError(Exception):
    """Bad input, params or models: the message names the file or key and the fix."""


USER_ERRORS: tuple[type[Exception], ...] = (UserError, FileNotFoundError)
