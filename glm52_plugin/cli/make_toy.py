"""``glm52 make-toy OUT``: write a deterministic toy checkpoint with the real tensor names."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output folder: new or empty, or an earlier toy with --force")
    p.add_argument("--layers", type=int, default=2,
                   help="2: layer 0 full, 1 shared; 8: GLM-5.2's first 8 layers (freq 4, offset 3); "
                        "1-10 with --real-widths")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="weight seed (same seed, same bytes)")
    p.add_argument("--nvfp4", action="store_true",
                   help="routed experts in ModelOpt NVFP4, as nvidia/GLM-5.2-NVFP4")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="replace the toy already in OUT (one glm52 wrote: it has a .glm52-toy "
                        "marker); other files are never removed")  # fmt: skip
    p.add_argument("--real-widths", action="store_true",
                   help="GLM-5.2's real widths (hidden 6144, 64 heads, ...) with fewer layers and "
                        "experts, for benchmarks: GBs on disk")  # fmt: skip
    p.add_argument("--experts", type=int, default=16,
                   help="routed experts per MoE layer with --real-widths (at least 8)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from glm52_plugin.cli.errors import UsageError
    from glm52_plugin.toy import make_toy

    if not args.real_widths and args.layers not in (2, 8):
        raise UsageError(
            f"--layers: toys have 2 or 8 layers (1-10 with --real-widths), got {args.layers}"
        )
    if args.real_widths and not (1 <= args.layers <= 10 and args.experts >= 8):
        raise UsageError(f"--real-widths needs 1 <= --layers <= 10 and --experts >= 8, got "
                         f"{args.layers} and {args.experts}")  # fmt: skip
    out = make_toy(args.out, layers=args.layers, seed=args.seed, nvfp4=args.nvfp4, force=args.force,
                   real_widths=args.real_widths, experts=args.experts)  # fmt: skip
    print(f"wrote {out}")
    return 0
