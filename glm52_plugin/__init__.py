"""GLM-5.2 (GlmMoeDsaForCausalLM) for vLLM and SGLang.

The core (config, reference model, NVFP4 codec, checkpoint reader, parsers, CLI) imports only
torch, safetensors and the standard library; engine adapters live in ``glm52_plugin.vllm`` and
``glm52_plugin.sglang`` and are imported only by the engines' plugin hooks.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("glm52-plugin")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
