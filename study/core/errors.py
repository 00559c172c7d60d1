"""User-facing errors: bad input that the CLI reports in one line with exit code 2.

    raise UserError("study/configs/x.yaml: field 'world.sharing' = 1.5: must lie in [0, 1]")
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a file, a field, a flag). The CLI prints it and exits with code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A configuration value that is malformed, unknown, of the wrong type or impossible."""

    def __init__(self, source: str, field: str, value: object, expected: str):
        self.source, self.field, self.value, self.expected = source, field, value, expected
        where = f"{source}: " if source else ""
        super().__init__(f"{where}field '{field}' = {value!r}: {expected}")
