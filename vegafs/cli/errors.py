"""The one exception type command functions raise for user-facing failures."""


class CliError(Exception):
    """A failure the user can act on: printed as ``vegafs: <message>``, exit ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
