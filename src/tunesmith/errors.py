"""The one error type a user can act on: every stage's own error (bad data, bad config, unknown
model, registry refusal) derives from it, so the CLI layer prints it the same way everywhere."""

from __future__ import annotations


class UserError(ValueError):
    """Something the user can fix. `str()` is the whole message: where (file, line, field), what is
    wrong and, when given, what to do. Without location parts it is the message alone, so the many
    errors that already put the location in their text keep it unchanged."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None, hint: str | None = None):
        self.message, self.file, self.line, self.field, self.hint = message, file, line, field, hint
        where = ":".join(str(p) for p in (file, line) if p is not None)
        parts = [p for p in (where, field) if p]
        text = (": ".join(parts) + ": " if parts else "") + message
        super().__init__(f"{text} ({hint})" if hint else text)


class DataError(UserError):
    """A data file or record that cannot be used as given (every stage that reads records raises it)."""


class ModelError(UserError, RuntimeError):
    """A model setting that cannot be resolved; the message says why and what to do. (RuntimeError too:
    callers from before the UserError base catch it as one.)"""
