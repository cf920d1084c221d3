"""The two errors the CLI prints as one clear message, without a traceback."""
from __future__ import annotations


class LauncherError(Exception):
    """Something the user can fix or retry: printed as-is, exit code 1."""

    exit_code = 1


class ConfigError(LauncherError):
    """The run config is wrong: the message names the key and the fix. Exit code 2."""

    exit_code = 2
