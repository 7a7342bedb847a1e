"""Shared fixtures: the two toy configs, their checkpoints (written once per session) and models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glm52_plugin.config import Glm52Config

TOY_LAYERS = (2, 8)


@pytest.fixture(params=TOY_LAYERS, ids=lambda n: f"toy{n}")
def toy_layers(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def toy_config(toy_layers: int) -> Glm52Config:
    return Glm52Config.toy(toy_layers)


@pytest.fixture(scope="session")
def toy_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    from glm52_plugin.toy import make_toy

    root = tmp_path_factory.mktemp("toys")
    return {n: make_toy(root / f"toy{n}", layers=n, seed=0, progress=False) for n in TOY_LAYERS}


@pytest.fixture(scope="session")
def toy_nvfp4_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    from glm52_plugin.toy import make_toy

    root = tmp_path_factory.mktemp("toys-nvfp4")
    return {
        n: make_toy(root / f"toy{n}-nvfp4", layers=n, seed=0, nvfp4=True, progress=False)
        for n in TOY_LAYERS
    }


@pytest.fixture(scope="session")
def hf_saved_checkpoints(
    toy_checkpoints: dict[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[int, Path]:
    """The BF16 toys saved by transformers' GlmMoeDsaForCausalLM (tests/hf_saved.py): config
    without the fields transformers does not know, no MTP tensors. Each is written on first use."""
    pytest.importorskip("transformers", reason="transformers is not installed")
    from tests.hf_saved import save_with_transformers

    root = tmp_path_factory.mktemp("hf-saved")

    class Saved(dict):
        def __missing__(self, n: int) -> Path:
            self[n] = save_with_transformers(toy_checkpoints[n], root / f"toy{n}")
            return self[n]

    return Saved()


@pytest.fixture
def toy_checkpoint(toy_checkpoints: dict[int, Path], toy_layers: int) -> Path:
    return toy_checkpoints[toy_layers]


@pytest.fixture(scope="session")
def toy_models(toy_checkpoints: dict[int, Path]) -> dict:
    from glm52_plugin.reference import Glm52ForCausalLM

    return {
        n: Glm52ForCausalLM.from_pretrained(p, dtype=torch.float32, progress=False)
        for n, p in toy_checkpoints.items()
    }


@pytest.fixture
def toy_model(toy_models: dict, toy_layers: int):
    return toy_models[toy_layers]


def prompt_ids(length: int, batch: int = 1, seed: int = 0, vocab: int = 404) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
