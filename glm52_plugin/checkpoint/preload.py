"""Header-only validation of the checkpoint an engine is about to load (engine-free).

The engine adapters call ``validate_before_load`` at the start of ``load_weights``: before any
tensor is consumed, every safetensors header is checked against the config (tensor names incl.
the MTP layer, shapes, dtypes, NVFP4 parts and exclusion rules, fused shards that must agree),
so a bad checkpoint fails with one error naming file and tensor instead of a KeyError or a
half-loaded model. Reading headers costs seconds even for the 459 GB GLM-5.2-NVFP4.

Before that, while the model is built, ``engine_config`` gives the engine's own HF config the
GLM-5.2 values its config.json omits (a checkpoint saved by transformers has no ``topk_method``,
so vLLM would build its router without the correction bias), and ``require_mtp_layer`` stops an
MTP draft model at start-up when the checkpoint has no MTP layer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from glm52_plugin.checkpoint.reader import Checkpoint
from glm52_plugin.checkpoint.safetensors_header import CheckpointError, read_headers
from glm52_plugin.checkpoint.validate import Report, mtp_absent_message, resolve_mtp
from glm52_plugin.config import Glm52Config

log = logging.getLogger(__name__)


def local_checkpoint_dir(name_or_path: str) -> Path | None:
    """The local directory behind a model path or an already-downloaded Hub id, else None."""
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        # local_files_only: never download here; the engine has fetched the snapshot already
        found = Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception:  # not a Hub id, not cached, offline: nothing to validate locally
        return None
    return found if (found / "config.json").is_file() else None


def validate_before_load(name_or_path: str, logger: logging.Logger = log) -> Report | None:
    """Raise CheckpointError for a checkpoint that would load wrongly; None if not local."""
    directory = local_checkpoint_dir(name_or_path)
    if directory is None:
        logger.info("glm52_plugin: %r is no local checkpoint directory; header validation "
                    "skipped", name_or_path)  # fmt: skip
        return None
    # shared-layer indexer tensors: the adapter's weight filter warns about them while loading
    report = Checkpoint.open(directory).check(warn_shared_indexer=False)
    logger.info("glm52_plugin: %s: safetensors headers validated (%d NVFP4 modules, %d ignored "
                "tensors)", directory, len(report.nvfp4_modules), len(report.ignored))  # fmt: skip
    return report


def engine_config(hf_config: Any, name_or_path: str, logger: logging.Logger = log) -> Glm52Config:
    """Our config for the engine's ``hf_config`` (whose ``to_dict()`` is config.json), with the
    MTP layer settled by the checkpoint's tensors when it is local; every GLM-5.2 value the file
    omitted (``Glm52Config.filled_fields``) is set on ``hf_config`` itself, so the engine's own
    layers see it too, and named in one INFO line."""
    d = hf_config.to_dict()
    if d.get("model_type") == "deepseek_mtp":  # vLLM renames a GLM-5.x MTP draft config so
        d["model_type"] = "glm_moe_dsa"
    cfg = Glm52Config.from_dict(d)
    directory = local_checkpoint_dir(name_or_path) if name_or_path else None
    if directory is not None:
        cfg = resolve_mtp(cfg, read_headers(directory))
    filled = {}
    for name, value in cfg.filled_values().items():
        if getattr(hf_config, name, None) is None:
            setattr(hf_config, name, value)
            filled[name] = value
    notes = []
    if filled:
        values = ", ".join(f"{k}={v!r}" for k, v in filled.items())
        notes.append(f"config.json omits {', '.join(filled)}; using GLM-5.2's values ({values})")
    if cfg.mtp_layer_absent:
        notes.append(mtp_absent_message(cfg))
    if notes:
        logger.info("glm52_plugin: %s: %s", directory or name_or_path, "; ".join(notes))
    return cfg


def require_mtp_layer(name_or_path: str) -> None:
    """Raise CheckpointError (one line) when MTP drafting is asked of a local checkpoint that has
    no tensor of its MTP layer (e.g. one saved by transformers); nothing for remote paths."""
    directory = local_checkpoint_dir(name_or_path) if name_or_path else None
    if directory is None:
        return
    cfg = Checkpoint.open(directory).config
    if cfg.mtp_layer_absent:
        raise CheckpointError(
            f"{directory}: {mtp_absent_message(cfg)} (no model.layers.{cfg.num_hidden_layers}.* "
            "tensor); serve it without speculative decoding"
        )
    if cfg.mtp_layer_index is None:
        raise CheckpointError(
            f"{directory}: num_nextn_predict_layers is 0 in config.json: no MTP layer to draft with"
        )
