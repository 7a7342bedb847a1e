"""vLLM general plugin: registers GLM-5.2's model classes (lazily) and parsers in every vLLM process.

Entry point: ``[project.entry-points."vllm.general_plugins"] glm52 = "glm52_plugin.vllm.plugin:register"``.
vLLM calls it in the front process, the engine core, each worker and the model-inspection
subprocess (``vllm/plugins/__init__.py:load_general_plugins``), so it is cheap, starts no CUDA
and imports no model module.

Off switches: ``GLM52_DISABLE_PLUGIN=1`` (ours: registers nothing, logs that) or vLLM's own
``VLLM_PLUGINS`` allowlist (e.g. ``VLLM_PLUGINS=""``: vLLM never calls us).

Outside the supported vLLM range the plugin logs an ERROR and registers nothing rather than
raising: vLLM calls every installed plugin for every model, and a raise would make the whole
installation unusable, not just GLM-5.2 (which then falls back to vLLM's in-tree class).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os

from glm52_plugin import __version__
from glm52_plugin.early_log import log_with_temporary_handler
from glm52_plugin.env import env_flag

DISABLE_ENV = "GLM52_DISABLE_PLUGIN"

# arch -> "module:Class". Strings: vLLM imports the module only where the model is built. Both keys
# exist in-tree (GLM-5.x maps to deepseek_v2/v32), so this overrides on purpose; the
# arch names stay, keeping vLLM's arch-keyed defaults (fp32 router, MTP rewrite, fp8-KV) active.
MODELS: dict[str, str] = {
    "GlmMoeDsaForCausalLM": "glm52_plugin.vllm.model:GlmMoeDsaForCausalLM",
    "DeepseekV32MTPModel": "glm52_plugin.vllm.mtp:DeepseekV32MTPModel",
}
PARSERS_MODULE = "glm52_plugin.vllm.parsers"

# Under vLLM's "vllm" logger: vLLM configures only that tree, so INFO elsewhere would be dropped.
LOGGER_NAME = "vllm.glm52_plugin"


def register() -> None:
    """Entry point; safe to call any number of times (work and log line happen once per process)."""
    _register_once()


@functools.cache  # once per process: vLLM may call us from several call sites, tests call twice
def _register_once() -> tuple[str, ...]:
    """Return the arch names registered in this process (empty when disabled or refused)."""
    from glm52_plugin.vllm import compat

    if env_flag(DISABLE_ENV):
        _log(
            logging.INFO,
            f"glm52_plugin {__version__}: disabled by {DISABLE_ENV}; registered nothing",
        )
        return ()
    try:
        vllm_version = compat.check_vllm_version()
        registry = compat.model_registry()
    except compat.UnsupportedVllmError as e:
        _log(
            logging.ERROR,
            f"glm52_plugin {__version__}: {e}; registered nothing (GLM-5.2 uses vLLM's in-tree classes)",
        )
        return ()

    for arch, target in MODELS.items():
        registry.register_model(arch, target)
    from glm52_plugin.vllm.cpu_nvfp4 import allow_fp32_nvfp4_on_cpu

    allow_fp32_nvfp4_on_cpu()
    from glm52_plugin.vllm.config_hook import install_config_hook

    install_config_hook()  # front-process checks: filled config, MTP layer present
    parsers = _register_parsers()
    registered = ", ".join(f"{arch} -> {target}" for arch, target in MODELS.items())
    _log(
        logging.INFO,
        f"glm52_plugin {__version__} active on vLLM {vllm_version} (pid {os.getpid()}): "
        f"registered {registered}; parsers: {parsers}",
    )
    return tuple(MODELS)


def _register_parsers() -> str:
    """Register our parsers; any failure propagates: a half-registered plugin must not pass."""
    names = importlib.import_module(PARSERS_MODULE).register_parsers()
    return ", ".join(names) if names else "none (GLM52_DISABLE_PARSERS is set)"


def _log(level: int, msg: str) -> None:
    """Log under vLLM's logger tree, and make sure the line is seen even before vLLM sets up logging.

    In the front process vLLM loads plugins in EngineArgs.__post_init__, before it configures its
    "vllm" logger; an INFO line there would go to Python's last-resort handler, which drops it.
    """
    from vllm.logger import init_logger

    logger = init_logger(LOGGER_NAME)
    if logger.hasHandlers() or not _vllm_configures_logging():
        logger.log(level, msg)
        return
    threshold = getattr(logging, os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper(), logging.INFO)
    if level < threshold:  # honour the level vLLM is about to apply
        return
    fmt = "%(levelname)s %(asctime)s [glm52_plugin] %(message)s"
    log_with_temporary_handler(logger, level, msg, fmt, "%m-%d %H:%M:%S")


def _vllm_configures_logging() -> bool:
    # VLLM_CONFIGURE_LOGGING=0 means the user owns logging; then we never add handlers ourselves.
    import vllm.envs as envs

    return bool(envs.VLLM_CONFIGURE_LOGGING)
