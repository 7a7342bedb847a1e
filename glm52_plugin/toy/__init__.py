"""Toy GLM-5.2 checkpoints: real tensor names and mechanisms at CPU size, written deterministically."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from torch import Tensor

from glm52_plugin.config import Glm52Config
from glm52_plugin.toy.tokenizer import save_tokenizer
from glm52_plugin.toy.weights import toy_state_dict
from glm52_plugin.toy.writer import atomic_directory, check_output_dir, write_checkpoint

# Bump when the toy's weights or files change, so cached default toys are rebuilt.
TOY_FORMAT = 2  # 2: main layers' residual branches scaled down, MTP layer fitted (mtp_fit)


@functools.lru_cache(maxsize=4)
def _toy_tensors(layers: int, seed: int) -> dict[str, Tensor]:
    """BF16 toy tensors with the MTP layer fitted to the main model, once per process."""
    from glm52_plugin.toy.mtp_fit import fit_mtp_layer

    cfg = Glm52Config.toy(layers)
    tensors = toy_state_dict(cfg, seed)
    tensors.update(fit_mtp_layer(cfg, tensors, seed))
    return tensors


def default_toy_dir(layers: int = 2, seed: int = 0, nvfp4: bool = False) -> Path:
    root = Path(os.environ.get("GLM52_TOY_DIR", Path.home() / ".cache" / "glm52_plugin" / "toys"))
    kind = "nvfp4" if nvfp4 else "bf16"
    return root / f"toy-{layers}l-{kind}-seed{seed}-v{TOY_FORMAT}"


def make_toy(
    out: str | Path,
    layers: int = 2,
    seed: int = 0,
    nvfp4: bool = False,
    progress: bool = True,
    force: bool = False,
    real_widths: bool = False,
    experts: int = 16,
) -> Path:
    """Write a toy checkpoint (config, sharded safetensors + index, tokenizer, chat template).
    ``out`` must be new or empty, or hold an earlier toy (its ``.glm52-toy`` marker) and ``force``
    be set; nothing else in it is ever removed (``toy.writer.atomic_directory``).
    ``real_widths``: GLM-5.2's own widths (hidden 6144, 64 heads, ...) with ``layers`` (1-10)
    layers of ``experts`` routed experts, for benchmarks (``toy.real_widths``; GBs on disk)."""
    check_output_dir(Path(os.path.abspath(out)), force)  # refuse before building any tensor
    if real_widths:
        from glm52_plugin.toy.real_widths import make_real_width_toy

        return make_real_width_toy(out, layers, seed, nvfp4, progress, experts, force=force)
    cfg = Glm52Config.toy(layers)
    tensors = dict(_toy_tensors(layers, seed))  # the NVFP4 toy reuses the BF16 toy's fit
    config = cfg.to_hf_dict()
    config["transformers_version"] = "5.23.0"
    json_files = {
        "generation_config.json": {
            "eos_token_id": list(cfg.eos_token_id),
            "pad_token_id": cfg.pad_token_id,
            "temperature": 1.0,
            "top_p": 0.95,
        }
    }
    if nvfp4:
        from glm52_plugin.toy.nvfp4 import quantize_toy_checkpoint

        tensors, quant = quantize_toy_checkpoint(tensors, cfg)
        config["quantization_config"] = quant
        json_files["hf_quant_config.json"] = {
            "producer": quant.get("producer", {"name": "modelopt", "version": "0.0.0"}),
            "quantization": {
                "quant_algo": "NVFP4",
                "group_size": 16,
                "kv_cache_quant_algo": None,
                "exclude_modules": list(quant.get("ignore", [])),
            },
        }
    json_files["config.json"] = config
    out = Path(out)
    with atomic_directory(out, force=force) as tmp:
        write_checkpoint(tmp, tensors, json_files, progress=progress)
        save_tokenizer(tmp, cfg.eos_token_id)
    return out


def ensure_toy(layers: int = 2, seed: int = 0, nvfp4: bool = False, progress: bool = True) -> Path:
    """The cached default toy checkpoint, built on first use."""
    out = default_toy_dir(layers, seed, nvfp4)
    if not (out / "model.safetensors.index.json").is_file():
        make_toy(out, layers, seed, nvfp4, progress, force=True)  # our cache: may replace a toy
    return out
