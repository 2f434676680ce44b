"""The kit's error type: every rejection names the file, the row and the value."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    """The message on one line: control characters (a newline in a quoted value) escaped."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class KitError(ValueError):
    """Bad input, located as precisely as the kit knows it.

    ``row`` is 1-based as in a spreadsheet, counting the header as row 1, so the first data
    row of a CSV is row 2. The message reads ``file:row: what (value 'v'); hint``.
    """

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 value: object = None, hint: str | None = None) -> None:
        self.file = file
        self.hint = hint
        self.row = row
        self.value = value
        self.reason = message
        where = ""
        if file is not None:
            where = f"{file}:{row}: " if row is not None else f"{file}: "
        elif row is not None:
            where = f"row {row}: "
        shown = ""
        if value is not None:
            text = str(value)
            if len(text) > 80:
                text = text[:77] + "..."
            shown = f" (value {text!r})"
        super().__init__(_one_line(f"{where}{message}{shown}" + (f"; {hint}" if hint else "")))

    def located(self, file: str | None = None, row: int | None = None) -> KitError:
        """The same error with the file and/or row filled in (when they were unknown)."""
        return KitError(self.reason, file=self.file or file,
                        row=self.row if self.row is not None else row, value=self.value,
                        hint=self.hint)


class KitWarning(UserWarning):
    """Something the user should know that does not stop the step (an old file format read
    as the new one); the command line prints it as one ``note:`` line."""
