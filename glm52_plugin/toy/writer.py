"""Write a HF-layout checkpoint: sharded safetensors + index and JSON side files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm


def _shards(tensors: Mapping[str, Tensor], max_bytes: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def write_checkpoint(
    directory: Path,
    tensors: Mapping[str, Tensor],
    json_files: Mapping[str, dict[str, Any]],
    max_shard_bytes: int = 2 << 20,
    progress: bool = True,
) -> None:
    """Shards ``tensors`` into ``model-0000i-of-0000n.safetensors`` with an index; writes json files."""
    groups = _shards(tensors, max_shard_bytes)
    weight_map: dict[str, str] = {}
    total = 0
    bar = tqdm(groups, desc=f"writing {directory.name}", unit="shard", disable=not progress)
    for i, names in enumerate(bar, 1):
        fname = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in names}, directory / fname, {"format": "pt"})
        for n in names:
            weight_map[n] = fname
            total += tensors[n].numel() * tensors[n].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    for fname, content in {"model.safetensors.index.json": index, **json_files}.items():
        (directory / fname).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")


# Written into every toy folder; lists the toy's files, so --force knows what it may replace.
MARKER = ".glm52-toy"


class OutputDirError(ValueError):
    """The output folder cannot take a toy without losing something that is not ours."""


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _toy_files(out: Path) -> list[str] | None:
    """The files a previous toy run wrote into ``out`` (from its marker), or None if not a toy."""
    try:
        listed = json.loads((out / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(listed, list) or not all(
        isinstance(f, str) and f not in ("", ".", "..", MARKER) and "/" not in f for f in listed
    ):
        return None  # a marker we did not write: never trust it to name what may be removed
    return listed


def check_output_dir(out: Path, force: bool = False) -> list[str] | None:
    """Raise OutputDirError unless ``out`` may receive a toy. Returns None for a folder that does
    not exist yet, else the files of the previous toy that the new one replaces ([] if empty)."""
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{out}: is a file, not a directory; choose a new or empty folder")
    if not out.exists():
        if out.is_symlink():
            raise OutputDirError(f"{out}: is a dangling symlink; choose a new or empty folder")
        parent = next(p for p in out.parents if p.exists())
        if not parent.is_dir():
            raise OutputDirError(f"{out}: {parent} is a file, not a directory")
        return None
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return []
    listed = _toy_files(out)
    if listed is None:
        raise OutputDirError(
            f"{out}: folder is not empty and holds no toy written by glm52 (no {MARKER} file); "
            "choose a new or empty folder"
        )
    if not force:
        raise OutputDirError(f"{out}: already holds a toy checkpoint; pass --force to replace it")
    # The toy writes plain files only: anything else under a listed name is not ours either.
    foreign = sorted(
        name
        for name in entries
        if name != MARKER
        and (name not in listed or (out / name).is_dir() or (out / name).is_symlink())
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise OutputDirError(
            f"{out}: holds files the toy did not write ({shown}); move them away or choose "
            "another folder"
        )
    return [f for f in listed if (out / f).exists()]


def _apply_umask(directory: Path) -> None:
    # mkdtemp makes a 0700 folder; give the toy the modes a plain mkdir/open would (0777/0666
    # less the umask), so another user (a container running as someone else) can read it.
    mask = _umask()
    directory.chmod(0o777 & ~mask)
    for path in directory.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


@contextmanager
def atomic_directory(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``out``; on success put its files in ``out`` with a marker
    listing them. A new ``out`` appears by one rename, so a killed run never leaves a half-written
    checkpoint that a later run would reuse. An existing ``out`` must be empty, or (with
    ``force``) hold only a previous toy's files, which are replaced; nothing else is ever removed.
    The temp folder is removed on every failure."""
    out = Path(os.path.abspath(out))
    old = check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside a new `out` (one rename at the end); inside an existing one (same file system, and
    # no need to write to its parent, e.g. `glm52 make-toy .`).
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{out.name}.tmp.", dir=out if old is not None else out.parent)
    )
    try:
        yield tmp
        files = sorted(p.name for p in tmp.iterdir())
        (tmp / MARKER).write_text(json.dumps({"format": "glm52-toy", "files": files}) + "\n")
        _apply_umask(tmp)
        if old is None:
            os.rename(tmp, out)  # fails if `out` appeared meanwhile with something in it
            return
        for name in old:
            (out / name).unlink(missing_ok=True)  # plain files the previous toy listed
        # The marker first: a run killed while moving leaves a folder --force can still replace.
        for name in [MARKER, *files]:
            os.replace(tmp / name, out / name)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
