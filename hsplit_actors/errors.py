"""User-facing errors: one line naming what is wrong and how to fix it (the CLI prints it and exits 2)."""


class ScenarioError(Exception):
    """Bad input from the user: printed as one line, never as a traceback."""

    def __init__(self, message: str, *, field: str | None = None, source: str | None = None):
        self.field = field
        self.source = source
        self.message = message
        where = f"{source}: " if source else ""
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the CLI prints this one line (what was kept, how to continue) and exits 130."""
