"""``glm52`` entry point and its one error convention.

Each subcommand module ``glm52_plugin.cli.<name>`` exposes ``add_arguments(p)`` (fills its
argparse parser) and ``run(args) -> int`` (the exit status), and raises
:class:`~glm52_plugin.cli.errors.UsageError` or :class:`~glm52_plugin.cli.errors.CommandError`
instead of printing errors itself. ``main`` turns every way a command can end into:

- ``glm52 <command>: error: <what>`` on stderr, no traceback (``GLM52_DEBUG=1`` adds it);
- exit 0 success, 1 failure (bad file, bad checkpoint, unreachable server), 2 usage error
  (argparse's own errors included), 130 on Ctrl-C, 141 when the reader of stdout went away
  (``glm52 inspect DIR | head -1``), as a shell tool killed by SIGPIPE would.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
import traceback
import urllib.error
from collections.abc import Sequence

from glm52_plugin.cli.errors import CliError

# Subcommand modules under glm52_plugin.cli, in --help order. Imported lazily so `glm52 --help`
# stays fast and one command's heavy imports (matplotlib, transformers) never slow another.
SUBCOMMANDS: dict[str, str] = {
    "generate": "Generate text with the reference model (default: the embedded toy checkpoint).",
    "make-toy": "Write a deterministic toy GLM-5.2 checkpoint (BF16 or NVFP4) with a tokenizer.",
    "schedule": "Show the IndexShare schedule (full/shared indexer layers) of a config.",
    "inspect": "Check a checkpoint from its safetensors headers: dims, schedule, precisions.",
    "plan": "Plan a GLM-5.2 deployment: per-GPU weights, KV cache, tokens that fit, FLOPs.",
    "verify": "Check a served GLM-5.2 (vLLM/SGLang) against the reference, teacher-forced.",
}

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd tool
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head -1` reports under pipefail

DEBUG_ENV = "GLM52_DEBUG"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show ``(default: X)`` where a default means something (not for flags or unset options)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the glm52 prefix (``glm52 <command>: error: ...``) and exit 2, which argparse
    already uses; the override only guarantees it for every subparser, built from this class."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _module_name(command: str) -> str:
    return "glm52_plugin.cli." + command.replace("-", "_")


def available_commands() -> list[str]:
    """Listed subcommands whose module is present in this build."""
    return [c for c in SUBCOMMANDS if importlib.util.find_spec(_module_name(c)) is not None]


def build_parser() -> ArgumentParser:
    from glm52_plugin import __version__

    parser = ArgumentParser(
        prog="glm52",
        description="GLM-5.2 tools: reference model, toy checkpoints, checks, plans.",
        epilog=f"Errors are one line on stderr; {DEBUG_ENV}=1 shows the traceback.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"glm52-plugin {__version__}")
    parser.add_argument(
        "-v", "--verbose", dest="log_debug", action="store_true", help="debug logging"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in available_commands():
        module = importlib.import_module(_module_name(command))
        help_text = SUBCOMMANDS[command]
        p = sub.add_parser(
            command, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def describe(e: BaseException) -> str:
    """One line for an exception: the file and OS reason for file errors, the server's reason for
    connection errors, the message otherwise."""
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        return f"cannot reach the server: {getattr(e.reason, 'strerror', None) or e.reason}"
    if isinstance(e, OSError) and e.strerror:
        if e.filename is not None and e.filename2 is not None:
            return f"{e.filename} -> {e.filename2}: {e.strerror}"
        if e.filename is not None:
            return f"{e.filename}: {e.strerror}"
        if isinstance(e, ConnectionError):
            return f"cannot reach the server: {e.strerror}"
        return e.strerror
    if isinstance(e, KeyError) and len(e.args) == 1:
        return str(e.args[0])  # str(KeyError) quotes its key
    return str(e) or type(e).__name__


def _report(command: str | None, message: str) -> None:
    prog = f"glm52 {command}" if command else "glm52"
    print(f"{prog}: error: {message}", file=sys.stderr)


def _debug_enabled() -> bool:
    from glm52_plugin.env import env_flag

    try:
        return env_flag(DEBUG_ENV)
    except ValueError:
        return True  # a garbled switch must not hide the traceback its user asked for


def _silence_stdout() -> None:
    # After a broken pipe, Python's final flush of stdout would raise again and print
    # "Exception ignored ... BrokenPipeError"; point stdout at /dev/null (Python's signal docs).
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (captured in tests): nothing will flush to a pipe


def main(argv: Sequence[str] | None = None) -> int:
    command: str | None = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)  # exits 2 (usage) or 0 (--help) itself
        command = args.command
        logging.basicConfig(
            level=logging.DEBUG if args.log_debug else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
        )
        if not getattr(args, "_run", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here rather than at interpreter exit
        return code
    except KeyboardInterrupt:
        if _debug_enabled():
            traceback.print_exc()
        _report(command, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except CliError as e:
        if _debug_enabled():
            traceback.print_exc()
        _report(command, describe(e))
        return e.exit_code
    except Exception as e:  # the convention: one line, not a traceback
        if _debug_enabled():
            traceback.print_exc()
        message = describe(e)
        if not isinstance(e, (OSError, ValueError, KeyError)):
            # Not a bad-input error the code anticipated: name the type and how to see more.
            message = f"{type(e).__name__}: {message} ({DEBUG_ENV}=1 shows the traceback)"
        _report(command, message)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
