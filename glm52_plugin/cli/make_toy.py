"""``glm52 make-toy OUT``: write a deterministic toy checkpoint with the real tensor names."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output folder: new or empty, or an earlier toy with --force")
    p.add_argument("--layers", type=int, choices=(2, 8), default=2,
                   help="2: layer 0 full, 1 shared; 8: GLM-5.2's first 8 layers (freq 4, offset 3)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="weight seed (same seed, same bytes)")
    p.add_argument("--nvfp4", action="store_true",
                   help="routed experts in ModelOpt NVFP4, as nvidia/GLM-5.2-NVFP4")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="replace the toy already in OUT (one glm52 wrote: it has a .glm52-toy "
                        "marker); other files are never removed")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from glm52_plugin.toy import make_toy

    out = make_toy(args.out, layers=args.layers, seed=args.seed, nvfp4=args.nvfp4, force=args.force)
    print(f"wrote {out}")
    return 0
