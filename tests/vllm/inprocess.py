"""vLLM's model classes built in this process, without an engine: a VllmConfig from EngineArgs
and the single-process distributed state a vLLM worker sets up before it builds a model."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def vllm_config_for(checkpoint: Path, dtype: str = "float32") -> Any:
    """The VllmConfig ``vllm.LLM(model=checkpoint, enforce_eager=True)`` would build on CPU."""
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(
        model=str(checkpoint),
        dtype=dtype,
        enforce_eager=True,
        skip_tokenizer_init=True,
        max_model_len=256,
        max_num_seqs=2,
        gpu_memory_utilization=0.1,
    )
    # vLLM's platform hooks export settings (LOCAL_WORLD_SIZE, LD_PRELOAD, ...) for the workers
    # it would start: keep them out of the engines later tests start from this environment
    saved = dict(os.environ)
    try:
        return args.create_engine_config()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def single_process_group(vllm_config: Any) -> Iterator[None]:
    """World size 1 over gloo (vLLM's layers ask for their TP/PP rank while being built)."""
    from vllm.config import set_current_vllm_config
    from vllm.distributed import (
        destroy_distributed_environment,
        destroy_model_parallel,
        init_distributed_environment,
        initialize_model_parallel,
    )

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with set_current_vllm_config(vllm_config):
        init_distributed_environment(
            world_size=1,
            rank=0,
            local_rank=0,
            distributed_init_method=f"tcp://127.0.0.1:{port}",
            backend="gloo",
        )
        initialize_model_parallel(1, 1)
    try:
        yield
    finally:
        destroy_model_parallel()
        destroy_distributed_environment()


def build(cls: type, vllm_config: Any) -> Any:
    """``cls(vllm_config=...)`` under vLLM's current-config context, as its model loader does."""
    from vllm.config import set_current_vllm_config

    with set_current_vllm_config(vllm_config):
        return cls(vllm_config=vllm_config, prefix="")
