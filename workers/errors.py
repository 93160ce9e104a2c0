"""Errors raised by workers/."""


class WorkerError(Exception):
    """Base of training-side errors."""


class UnknownName(WorkerError, KeyError):
    """A registry lookup with a name that is not registered."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        super().__init__(f"unknown {kind} '{name}'; expected one of: {', '.join(sorted(valid))}")
        self.kind, self.name, self.valid = kind, name, valid

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Stopped(WorkerError):
    """Training was told to stop (lease lost or run cancelled)."""


class Unpackable(WorkerError, ValueError):
    """Runs handed to the packed executor that cannot train as one pack."""
