"""A checkpoint saved by transformers, made the way a user gets one (shared by core and engine tests).

A model is built in code with transformers' own ``GlmMoeDsaConfig`` (only the fields that class
knows), the toy's weights are loaded into transformers' ``GlmMoeDsaForCausalLM`` and the model is
written with ``save_pretrained``, as a fine-tune or a conversion script does. Measured with
transformers 5.25 (core env) and 5.19 (engine envs): the config.json then lacks the fields
``glm52_plugin.config.GLM52_FILLS`` lists (and freq/offset: it writes ``indexer_types``), no
``model.layers.<N>.*`` MTP tensor is written (transformers has no MTP module), and 5.25 stores the
router weight ``mlp.gate.weight`` as F32 (its ``_keep_in_fp32_modules_strict``). Loading a toy
with its own config and saving it keeps every config field (unknown keys travel as attributes)
but still drops the MTP layer: ``keep_config=True`` makes that variant.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

_WRITTEN_BY_SAVE = ("config.json", "generation_config.json", "model.safetensors.index.json")


def save_with_transformers(src: Path, out: Path, keep_config: bool = False) -> Path:
    """``out``: the toy checkpoint ``src`` loaded into transformers and ``save_pretrained``; the
    tokenizer files are copied over, as a user saves the tokenizer alongside."""
    import torch
    import transformers
    from transformers import GlmMoeDsaConfig, GlmMoeDsaForCausalLM

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the dropped MTP tensors are listed otherwise
    try:
        if keep_config:
            config = None
        else:
            raw = json.loads((src / "config.json").read_text())
            known = {f.name for f in dataclasses.fields(GlmMoeDsaConfig)}
            config = GlmMoeDsaConfig(**{k: v for k, v in raw.items() if k in known})
        kwargs = {"config": config} if config is not None else {}
        model = GlmMoeDsaForCausalLM.from_pretrained(src, dtype=torch.bfloat16, **kwargs)
        # the toy's top_p implies sampling; transformers 5.19 refuses to save it without this
        model.generation_config.do_sample = True
        model.save_pretrained(out)
    finally:
        transformers.logging.set_verbosity(verbosity)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name not in _WRITTEN_BY_SAVE:
            shutil.copy2(f, out / f.name)
    return out
