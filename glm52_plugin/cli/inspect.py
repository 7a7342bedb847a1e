"""``glm52 inspect DIR``: check a checkpoint from its safetensors headers only (no tensor data)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from glm52_plugin.cli.errors import CommandError, checkpoint_dir

EXAMPLES = 3  # findings shown per group without --verbose


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="HF checkpoint directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--verbose", action="store_true",
                   help=f"list every finding, not one line per kind with {EXAMPLES} examples")  # fmt: skip


def group_findings(issues: list[Any]) -> list[dict[str, Any]]:
    """Findings of one kind (same level, same message up to layer/expert indices) as one group:
    ``{"level", "message", "count", "where", "lines"}`` (``lines``: each finding in full), in order
    of first appearance."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for issue in issues:
        # layer and expert indices inside tensor names ("layers.3.", "experts.17.") do not make a
        # new kind of finding; other numbers (shapes, dtypes like NVFP4) do
        key = (issue.level, re.sub(r"(?<=\.)\d+(?=\.)", "#", issue.message))
        g = groups.setdefault(key, {"level": issue.level, "message": issue.message,
                                    "count": 0, "where": [], "lines": []})  # fmt: skip
        g["count"] += 1
        g["where"].append(issue.where)
        g["lines"].append(str(issue))
        if g["message"] != issue.message:
            g["message"] = key[1]  # the messages differ in indices only: show the pattern
    return list(groups.values())


def summarize(directory: Path) -> dict[str, Any]:
    from glm52_plugin.checkpoint import Checkpoint
    from glm52_plugin.checkpoint.names import indexer_layer

    ckpt = Checkpoint.open(directory)
    report = ckpt.report()
    cfg = ckpt.config
    indexer_layers = sorted({hit[0] for n in ckpt.tensors if (hit := indexer_layer(n))})
    expected = [*cfg.full_layers] + (
        [cfg.mtp_layer_index] if cfg.mtp_layer_index is not None else []
    )
    params = sum(v[0] for g in report.precision.values() for v in g.values())
    return {
        "directory": str(directory),
        "architecture": ckpt.raw_config.get("architectures"),
        "dims": {
            k: getattr(cfg, k)
            for k in (
                "hidden_size",
                "vocab_size",
                "num_hidden_layers",
                "num_nextn_predict_layers",
                "num_attention_heads",
                "q_lora_rank",
                "kv_lora_rank",
                "qk_nope_head_dim",
                "qk_rope_head_dim",
                "v_head_dim",
                "intermediate_size",
                "moe_intermediate_size",
                "n_routed_experts",
                "num_experts_per_tok",
                "n_shared_experts",
                "index_topk",
                "index_n_heads",
                "index_head_dim",
            )
        },
        "indexshare": {
            "full_layers": list(cfg.full_layers),
            "mtp_layer": cfg.mtp_layer_index,
            "indexer_tensors_on_layers": indexer_layers,
            "agrees": indexer_layers == expected,
            "extra": sorted(set(indexer_layers) - set(expected)),
            "missing": sorted(set(expected) - set(indexer_layers)),
        },
        "quantization": None
        if ckpt.quant is None
        else {
            "algo": ckpt.quant.algo,
            "group_size": ckpt.quant.group_size,
            "kv_cache_algo": ckpt.quant.kv_cache_algo,
            "exclude": list(ckpt.quant.exclude),
            "source": ckpt.quant.source,
        },
        "precision": {
            g: {p: {"params": v[0], "bytes": v[1]} for p, v in d.items()}
            for g, d in report.precision.items()
        },
        "nvfp4_linears": len(report.nvfp4_modules),
        "tensors": len(ckpt.tensors),
        "files": len({i.file for i in ckpt.tensors.values()}),
        "total_params": params,
        "total_bytes": sum(i.nbytes for i in ckpt.tensors.values()),
        "errors": [str(i) for i in report.errors],
        "warnings": [str(i) for i in report.issues if i.level == "warning"],
        "findings": group_findings([i for i in report.issues if i.level in ("error", "warning")]),
    }


def run(args: argparse.Namespace) -> int:
    from glm52_plugin.checkpoint import CheckpointError

    try:
        s = summarize(checkpoint_dir(args.dir))
    except CheckpointError as e:
        if args.json:  # a machine reader still gets JSON; the error line goes to stderr as always
            print(json.dumps({"directory": str(args.dir), "errors": [str(e)]}, indent=2))
        raise CommandError(str(e)) from e
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        _print(s, args.verbose)
    if s["errors"]:
        n = len(s["errors"])
        raise CommandError(
            f"{args.dir}: {n} error{'s' * (n != 1)} in the checkpoint (listed above)"
        )
    return 0


def _print(s: dict[str, Any], verbose: bool = False) -> None:
    d, ix = s["dims"], s["indexshare"]
    print(f"{s['directory']}: {s['architecture']}, {s['files']} files, {s['tensors']} tensors")
    print("dims: " + ", ".join(f"{k}={v}" for k, v in d.items()))
    print(f"IndexShare: full layers {ix['full_layers']}, MTP layer {ix['mtp_layer']}; indexer "
          f"tensors {'agree' if ix['agrees'] else 'DISAGREE'} (extra {ix['extra']}, "
          f"missing {ix['missing']})")  # fmt: skip
    q = s["quantization"]
    print("quantization: none (BF16)" if q is None else
          f"quantization: {q['algo']} group {q['group_size']}, KV {q['kv_cache_algo']}, "
          f"{len(q['exclude'])} exclude patterns ({q['source']})")  # fmt: skip
    print(f"{'group':<18}{'precision':<10}{'params':>16}{'bytes':>16}")
    for group, precs in s["precision"].items():
        for prec, v in precs.items():
            print(f"{group:<18}{prec:<10}{v['params']:>16,}{v['bytes']:>16,}")
    print(f"total: {s['total_params']:,} params, {s['total_bytes']:,} bytes, "
          f"{s['nvfp4_linears']} NVFP4 linears")  # fmt: skip
    for g in s["findings"]:
        if g["count"] == 1 or verbose:
            print("\n".join(g["lines"]))
            continue
        shown = "; ".join(g["where"][:EXAMPLES])
        print(
            f"{g['level']}: {g['message']}: {g['count']} times, e.g. {shown} (--verbose lists all)"
        )
