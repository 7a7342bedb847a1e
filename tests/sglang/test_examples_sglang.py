"""examples/sglang_launch.sh: every flag of each mode parses with SGLang's own server-args CLI.

Launching needs a CUDA GPU (SGLang layers cannot be built on CPU), so the command is checked by
SGLang's parser instead; the GPU run is scripts/sglang_gpu_smoke.py.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("sglang", reason="SGLang is not installed in this environment")

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["tp8", "tp-ep", "mtp"])
def test_launch_example_flags_parse_with_sglangs_own_cli(mode: str) -> None:
    from sglang.srt.server_args import ServerArgs

    out = subprocess.run(
        ["bash", str(REPO / "examples/sglang_launch.sh"), mode], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "GLM52_DRY_RUN": "1"}, check=True,
    )  # fmt: skip
    argv = shlex.split(out.stdout)
    assert argv[:3] == ["python", "-m", "sglang.launch_server"]
    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    args = parser.parse_args(argv[3:])
    assert (args.model_path, args.tp_size, args.quantization) == (
        "nvidia/GLM-5.2-NVFP4",
        8,
        "modelopt_fp4",
    )
    assert (args.tool_call_parser, args.reasoning_parser) == ("glm47", "glm45")
    assert args.ep_size == (8 if mode == "tp-ep" else 1)
    if mode == "mtp":
        assert (args.speculative_algorithm, args.speculative_num_steps,
                args.speculative_eagle_topk, args.speculative_num_draft_tokens) == ("EAGLE", 3, 1, 4)  # fmt: skip
