"""Check a served GLM-5.2 against the reference model: ``glm52 verify`` under its older name.

    python examples/check_against_reference.py --checkpoint /tmp/glm52-toy-nvfp4 \
        --base-url http://127.0.0.1:8000 [--engine vllm|sglang] [--tokens 32]

is ``glm52 verify --model /tmp/glm52-toy-nvfp4 --base-url http://127.0.0.1:8000 ...``: prompts
longer than ``index_topk`` go to the server, and its greedy tokens are teacher-forced through the
pure-PyTorch reference on the same checkpoint (in memory, or streamed layer by layer when it does
not fit). ``--checkpoint`` and ``--tokens`` are this script's old spellings of ``--model`` and
``--max-new-tokens``; every other ``glm52 verify`` option passes through (see
``glm52 verify --help``). Exit code 0 = every prompt passed, 1 = a failure, 2 = usage/connection.
"""

from __future__ import annotations

import sys

from glm52_plugin.cli.main import main

OLD_NAMES = {"--checkpoint": "--model", "--tokens": "--max-new-tokens"}


def translate(argv: list[str]) -> list[str]:
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        out.append(OLD_NAMES.get(name, name) + eq + value)
    return out


if __name__ == "__main__":
    args = translate(sys.argv[1:])
    if "--base-url" not in args and not any(a.startswith("--base-url=") for a in args):
        args += ["--base-url", "http://127.0.0.1:8000"]
    sys.exit(main(["verify", *args]))
