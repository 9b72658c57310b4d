"""User-facing errors.

Anything a user can get wrong (a config value, a file, a server address) raises
``RaypostError``; the CLI prints it as one line and exits with ``exit_code``.
Everything else is a bug and keeps its traceback.
"""


class RaypostError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    exit_code = 1


class ConfigError(RaypostError, ValueError):
    """A config or search-space value is invalid (checked before any work starts)."""

    exit_code = 2


class DataError(RaypostError, ValueError):
    """A dataset file or row is missing or malformed."""

    exit_code = 2


class TrackingError(RaypostError):
    """The MLflow tracking server or a tracked entity cannot be reached or found."""

    exit_code = 3


class SourceError(RaypostError):
    """A remote source (a download) did not answer or refused; retrying later may work."""

    exit_code = 4


class Interrupted(RaypostError):
    """A sweep stopped by SIGINT or SIGTERM after saving its state; ``--resume`` continues it."""

    exit_code = 130
