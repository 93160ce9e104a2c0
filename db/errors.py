"""Errors raised by db/. service/ maps them to HTTP; workers/ treats LeaseLost as 'stop now'."""


class DBError(Exception):
    """Base of storage errors."""


class LeaseLost(DBError):
    """The attempt no longer owns the run (lease expired and reaped, or run cancelled)."""

    def __init__(self, run_id: int, attempt: int) -> None:
        super().__init__(f"run {run_id} attempt {attempt} no longer holds its lease")
        self.run_id = run_id
        self.attempt = attempt


class SchemaNotCurrent(DBError):
    """The database schema is behind the code; the message says which command fixes it."""


class SweepCancelled(DBError):
    """A change that would undo a sweep's cancel (retrying its failed runs)."""

    def __init__(self, sweep_id: int) -> None:
        super().__init__(
            f"sweep {sweep_id} is cancelled: its failed runs are not retried (submit it again)"
        )
        self.sweep_id = sweep_id
