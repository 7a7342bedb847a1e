"""The two errors a ``glm52`` subcommand raises; ``cli.main`` turns them into one line and an exit code.

Every subcommand reports trouble the same way: ``glm52 <command>: error: <message>`` on stderr,
exit 2 for a usage error (the command line asks for something invalid), 1 for a failure (the input
is bad or the work could not be done). Subcommands raise these instead of printing and returning
codes themselves, so the convention lives in one place.
"""

from __future__ import annotations

from pathlib import Path


class CliError(Exception):
    """Base of the errors ``glm52`` reports as one line; ``exit_code`` is the process exit status."""

    exit_code = 1


class UsageError(CliError):
    """The command line is invalid (a bad value, a missing or conflicting option): exit 2."""

    exit_code = 2


class CommandError(CliError):
    """The command could not do its job (bad file, unreachable server, too little memory): exit 1."""

    exit_code = 1


def checkpoint_dir(path: str | Path) -> Path:
    """``path`` if it is a folder, else the one error every command gives for a missing one."""
    path = Path(path)
    if not path.exists():
        raise CommandError(f"{path}: no such checkpoint folder")
    if not path.is_dir():
        raise CommandError(f"{path}: not a folder (a checkpoint is a folder with config.json)")
    return path
