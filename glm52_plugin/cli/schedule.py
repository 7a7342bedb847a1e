"""``glm52 schedule [DIR]``: print the IndexShare schedule of a checkpoint, or of GLM-5.2 itself."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from glm52_plugin.cli.errors import checkpoint_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="checkpoint dir or config.json (default: GLM-5.2)")
    p.add_argument("--json", action="store_true", help="print the resolved indexer_types as JSON")


def run(args: argparse.Namespace) -> int:
    from glm52_plugin.config import Glm52Config
    from glm52_plugin.schedule import render_schedule

    if args.path is None:
        cfg = Glm52Config.glm52()
    else:
        path = Path(args.path)
        cfg = Glm52Config.from_pretrained(path if path.is_file() else checkpoint_dir(path))
    if args.json:
        print(json.dumps({"indexer_types": list(cfg.indexer_types),
                          "full_layers": list(cfg.full_layers)}))  # fmt: skip
    else:
        print(render_schedule(cfg))
    return 0
