"""SGLang general plugin: makes our GLM-5.2 model classes (and parsers) active in every SGLang process.

Entry point: ``[project.entry-points."sglang.srt.plugins"] glm52 = "glm52_plugin.sglang.plugin:register"``.
SGLang's ``load_plugins()`` calls it once per process: in the launcher before server args are
parsed, in Engine, and in each scheduler / TP worker before the model is resolved
(``sglang/srt/plugins/__init__.py``), so
users set nothing. The documented alternative is ``SGLANG_EXTERNAL_MODEL_PACKAGE=glm52_plugin.sglang.models``.

Off switches: ``GLM52_DISABLE_PLUGIN=1`` (registers nothing, logs that) or SGLang's
``SGLANG_PLUGINS`` allowlist naming other plugins only.

The override is applied when SGLang's model registry module is imported (at once if it already
is): importing it loads every in-tree model, which only model-building processes need.

Loud failure: our classes are imported with strict=True. SGLang would only log a plugin's exception
and then serve GLM-5.2 with its in-tree classes, so on an import error both arch names are
registered to a stub whose construction raises that error (after an ERROR traceback): a GLM-5.2
server fails to start instead of silently running different code; other models are unaffected.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from glm52_plugin import __version__
from glm52_plugin.early_log import log_with_temporary_handler
from glm52_plugin.env import env_flag

DISABLE_ENV = "GLM52_DISABLE_PLUGIN"
MODELS_PACKAGE = "glm52_plugin.sglang.models"
ARCHS: tuple[str, ...] = ("GlmMoeDsaForCausalLM", "GlmMoeDsaForCausalLMNextN")
PARSERS_MODULE = "glm52_plugin.sglang.parsers"
REGISTRY_MODULE = "sglang.srt.models.registry"

logger = logging.getLogger(__name__)


def register() -> None:
    """Entry point; safe to call any number of times (work and log line happen once per process)."""
    _register_once()


@functools.cache  # once per process; a raise is not cached, so a later call retries
def _register_once() -> bool:
    """Arrange the override (now, or when SGLang's registry module is imported); False when disabled."""
    if env_flag(DISABLE_ENV):
        _log(
            logging.INFO,
            f"glm52_plugin {__version__}: disabled by {DISABLE_ENV}; registered nothing",
        )
        return False
    parsers = _register_parsers()
    # Importing the registry imports every in-tree model (10-20 s on 2 cores), and only processes
    # that build a model (schedulers / TP workers) need it; the launcher and detokenizer do not.
    # So register when the registry module is imported, or now if it already was.
    registry = sys.modules.get(REGISTRY_MODULE)
    if registry is not None:
        _override(registry)
        when = "applied now"
    else:
        sys.meta_path.insert(0, _AfterImport(REGISTRY_MODULE, _override))
        when = "applied when SGLang's model registry loads"
    _log(
        logging.INFO,
        f"glm52_plugin {__version__} active (pid {os.getpid()}): {', '.join(ARCHS)} -> "
        f"{MODELS_PACKAGE} ({when}); parsers: {parsers}",
    )
    return True


def _override(registry_module: ModuleType) -> None:
    """Register our classes in SGLang's registry, replacing the in-tree ones of the same name."""
    registry = registry_module.ModelRegistry
    try:
        # Public API: loads the in-tree models first (a no-op when the registry module already did),
        # then ours with strict=True (an import error raises instead of being skipped) and
        # overwrite=True (same-name in-tree classes are replaced, on purpose).
        registry.register(MODELS_PACKAGE, overwrite=True, strict=True)
    except Exception as e:
        for arch in ARCHS:
            registry.models[arch] = _failed_import_stub(arch, e)
        logger.exception("glm52_plugin %s: importing %s failed", __version__, MODELS_PACKAGE)
        return
    logger.debug("glm52_plugin: %s now resolve to %s", ", ".join(ARCHS), MODELS_PACKAGE)


class _AfterImport(importlib.abc.MetaPathFinder):
    """One-shot post-import hook: runs ``callback(module)`` right after ``name`` is first executed.

    It finds the module's spec as the normal path finder would and wraps that spec's loader, so
    the module itself is loaded unchanged; anything importing it sees our registration done.
    """

    def __init__(self, name: str, callback: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        # PathFinder does not consult sys.meta_path, so this does not recurse into us.
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_callback(module: ModuleType) -> None:
            exec_module(module)
            if self in sys.meta_path:  # one shot; a bare find_spec() call does not count
                sys.meta_path.remove(self)
            self.callback(module)

        spec.loader.exec_module = exec_then_callback  # type: ignore[method-assign]
        return spec


def _register_parsers() -> str:
    """Register our parsers; any failure propagates (SGLang logs it as a failed plugin)."""
    names = importlib.import_module(PARSERS_MODULE).register_parsers()
    return ", ".join(names) if names else "none (GLM52_DISABLE_PARSERS is set)"


def _failed_import_stub(arch: str, error: BaseException) -> type:
    """A registry entry for ``arch`` that raises ``error`` (chained) when SGLang builds the model."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            f"glm52_plugin could not import its SGLang model classes ({MODELS_PACKAGE}): {error!r}. "
            f"Fix the installation, or set {DISABLE_ENV}=1 to serve with SGLang's in-tree {arch}."
        ) from error

    return type(
        arch, (), {"__init__": __init__, "__module__": __name__, "glm52_import_error": error}
    )


def _log(level: int, msg: str) -> None:
    """Log via this module's logger, and make sure the line is seen before SGLang sets up logging.

    The launcher and each scheduler run load_plugins() before configure_logger(), when the root
    logger has no handler and Python's last-resort handler drops INFO.
    """
    if logger.hasHandlers():
        logger.log(level, msg)
        return
    log_with_temporary_handler(logger, level, msg, "[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S")
