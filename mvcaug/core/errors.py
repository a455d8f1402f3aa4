"""The errors that mean "fix your input", as opposed to bugs: stages report them in one line.

Each module's own error class derives from UserError, so this module imports nothing: a stage that
catches user errors does not pay for importing every other stage's libraries (diffusers, timm). Any
other exception is a bug and keeps its traceback.
"""

__all__ = ["UserError", "MissingInputError", "DiskFullError", "OutputNotWritableError", "DeviceError"]


class UserError(Exception):
    """Bad input, params or models: the message names the file or key and the fix."""


class MissingInputError(UserError, FileNotFoundError):
    """An input a stage reads does not exist: the message names it and what writes it; `stage`, when set, is the
    pipeline stage whose output it is (the command line says how to run that stage: the domain names no tool)."""

    def __init__(self, message: str, stage: str | None = None):
        super().__init__(message)
        self.stage = stage


class DiskFullError(UserError, OSError):
    """The disk filled up while writing: the message names the file; finished work is kept."""


class OutputNotWritableError(UserError, PermissionError):
    """An output folder may not be written to (read-only): the message names it and the fix."""


class DeviceError(UserError, RuntimeError):
    """The machine cannot run what valid params ask of it (fp16 on a CPU, a run larger than the GPU's memory): a
    fact of the device present, known only at run time; the message names the knobs that fit the machine."""
