"""The core imports without any engine: vllm/sglang are blocked while every core module imports."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "glm52_plugin", "glm52_plugin.config", "glm52_plugin.presets", "glm52_plugin.schedule",
    "glm52_plugin.reference", "glm52_plugin.reference.generate", "glm52_plugin.reference.build",
    "glm52_plugin.toy", "glm52_plugin.toy.chat", "glm52_plugin.cli.main",
]  # fmt: skip


def test_core_never_imports_an_engine() -> None:
    code = (
        "import sys; sys.modules['vllm'] = None; sys.modules['sglang'] = None\n"
        + "".join(f"import {m}\n" for m in CORE)
        + "import pkgutil, glm52_plugin\n"
        "for m in pkgutil.walk_packages(glm52_plugin.__path__, 'glm52_plugin.'):\n"
        "    if not m.name.startswith(('glm52_plugin.vllm', 'glm52_plugin.sglang', 'glm52_plugin.__main__')):\n"
        "        __import__(m.name)\n"
        "assert not any(k.startswith(('vllm.', 'sglang.')) for k in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
