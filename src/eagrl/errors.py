"""User-facing errors: bad input and bad configuration end with one clear line, never a traceback."""


class EAGRLError(Exception):
    """An error the user can fix (a missing file, a wrong option, a malformed column).

    The message must name the file, column or config option at fault and say what to do.
    Entry points print it as one line and exit with status 2.
    """


class DataError(EAGRLError):
    """Raw or processed data that cannot be used as it is."""


class ConfigError(EAGRLError):
    """A config value that cannot work (an unknown feature, an impossible split, ...)."""


class ArtifactError(EAGRLError):
    """A finished artifact or a checkpoint whose files are missing, truncated or changed since it was written."""
