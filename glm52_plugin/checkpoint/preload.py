"""Header-only validation of the checkpoint an engine is about to load (engine-free).

The engine adapters call ``validate_before_load`` at the start of ``load_weights``: before any
tensor is consumed, every safetensors header is checked against the config (tensor names incl.
the MTP layer, shapes, dtypes, NVFP4 parts and exclusion rules, fused shards that must agree),
so a bad checkpoint fails with one error naming file and tensor instead of a KeyError or a
half-loaded model. Reading headers costs seconds even for the 459 GB GLM-5.2-NVFP4.
"""

from __future__ import annotations

import logging
from pathlib import Path

from glm52_plugin.checkpoint.reader import Checkpoint
from glm52_plugin.checkpoint.validate import Report

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
