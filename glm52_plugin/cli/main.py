"""``glm52`` entry point: each subcommand module exposes ``add_parser(subparsers)`` and ``run(args)``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

# Subcommand modules under glm52_plugin.cli, in --help order. Imported lazily so `glm52 --help`
# stays fast and one command's heavy imports (matplotlib, transformers) never slow another.
SUBCOMMANDS: dict[str, str] = {
    "generate": "Generate text with the reference model (default: the embedded toy checkpoint).",
    "make-toy": "Write a deterministic toy GLM-5.2 checkpoint (BF16 or NVFP4) with a tokenizer.",
    "schedule": "Show the IndexShare schedule (full/shared indexer layers) of a config.",
    "inspect": "Check a checkpoint from its safetensors headers: dims, schedule, precisions.",
    "plan": "Plan a GLM-5.2 deployment: per-GPU weights, KV cache, tokens that fit, FLOPs.",
}


def _module_name(command: str) -> str:
    return "glm52_plugin.cli." + command.replace("-", "_")


def available_commands() -> list[str]:
    """Listed subcommands whose module is present in this build."""
    return [c for c in SUBCOMMANDS if importlib.util.find_spec(_module_name(c)) is not None]


def build_parser() -> argparse.ArgumentParser:
    from glm52_plugin import __version__

    parser = argparse.ArgumentParser(
        prog="glm52", description="GLM-5.2 tools: reference model, toy checkpoints, checks, plans."
    )
    parser.add_argument("--version", action="version", version=f"glm52-plugin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in available_commands():
        module = importlib.import_module(_module_name(command))
        help_text = SUBCOMMANDS[command]
        p = sub.add_parser(command, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as e:
        # Bad input (config, checkpoint, arguments): one clear line, no traceback.
        print(f"glm52 {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
