"""GPU smoke test for the SGLang plugin: serve a toy NVFP4 checkpoint with stock
``python -m sglang.launch_server`` and check its greedy tokens against the reference model.

Needs a machine with SGLang 0.5.23 and a CUDA GPU (SGLang layers cannot be built on CPU); run it
inside the SGLang environment with this package installed:

    python scripts/sglang_gpu_smoke.py [--layers 2|8] [--bf16] [--keep DIR]

The reference runs on the CPU in fp32, teacher-forced on SGLang's own tokens: every SGLang token
must be the reference's argmax or within ``--tolerance`` nats of it (bf16 kernels may flip a
near-tie), and the plugin's INFO line must appear in the server log. Exit code 0 = pass.

``--mtp K`` serves with the MTP draft (``--speculative-algorithm EAGLE``, K steps, top-k 1: the
NextN class ``GlmMoeDsaForCausalLMNextN``) and compares SGLang's own per-request acceptance, the
``meta_info`` fields its tokenizer manager fills (``spec_accept_rate`` = correct drafts / proposed
drafts, ``spec_accept_length`` = completion tokens / ``spec_verify_ct``), with the reference's
``generate(mtp_draft_tokens=K)`` on the same prompt; they must agree within
``--acceptance-tolerance``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, choices=(2, 8), default=2)
    p.add_argument("--bf16", action="store_true", help="BF16 toy instead of NVFP4")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--tolerance", type=float, default=0.5, help="nats, for bf16 near-ties")
    p.add_argument("--keep", help="write the toy checkpoint here and keep it")
    p.add_argument("--mtp", type=int, default=0, metavar="K", help="MTP with K draft steps")
    p.add_argument("--acceptance-tolerance", type=float, default=0.1,
                   help="|SGLang - reference| acceptance rate allowed (bf16 drafts may flip ties)")  # fmt: skip
    args = p.parse_args()

    import torch

    from glm52_plugin.reference import Glm52ForCausalLM
    from glm52_plugin.served_check import check_tokens
    from glm52_plugin.toy import make_toy

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="glm52-sglang-smoke-"))
    ckpt = make_toy(root / "toy", layers=args.layers, nvfp4=not args.bf16)
    port = _free_port()
    log = root / "server.log"
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(ckpt), "--port", str(port),
           "--host", "127.0.0.1", "--tp", "1", "--skip-tokenizer-init", "--dtype", "bfloat16",
           "--tool-call-parser", "glm47", "--reasoning-parser", "glm45"]  # fmt: skip
    if not args.bf16:
        cmd += ["--quantization", "modelopt_fp4"]
    if args.mtp:
        cmd += ["--speculative-algorithm", "EAGLE", "--speculative-num-steps", str(args.mtp),
                "--speculative-eagle-topk", "1",
                "--speculative-num-draft-tokens", str(args.mtp + 1)]  # fmt: skip
    print("launching:", " ".join(cmd))
    with log.open("w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 900
        while True:
            if server.poll() is not None:
                print(log.read_text()[-5000:])
                print(f"FAIL: server exited with {server.returncode}")
                return 1
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    print("FAIL: server did not become healthy in 900 s")
                    return 1
                time.sleep(5)
        prompt = torch.randint(0, 384, (40,), generator=torch.Generator().manual_seed(0)).tolist()
        params = {"temperature": 0, "max_new_tokens": args.tokens, "ignore_eos": True}
        reply = _post(
            f"http://127.0.0.1:{port}/generate", {"input_ids": prompt, "sampling_params": params}
        )
        tokens = reply["output_ids"]
        meta = reply.get("meta_info", {})
    finally:
        server.terminate()
        server.wait(60)

    text = log.read_text()
    ok = "glm52_plugin" in text
    print(f"plugin log line in server log: {ok}")
    ref = Glm52ForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    result = check_tokens(ref, prompt, tokens, args.tolerance)
    print(result.summary())
    ok = ok and result.ok
    if args.mtp:
        ok = _check_acceptance(ref, prompt, args, meta) and ok
    return 0 if ok else 1


def _check_acceptance(ref, prompt: list[int], args: argparse.Namespace, meta: dict) -> bool:
    """SGLang's meta_info acceptance against the reference's on the same prompt."""
    import torch

    from glm52_plugin.reference.generate import generate

    if "spec_accept_rate" not in meta:
        print(f"FAIL: no spec_accept_rate in the reply's meta_info: {sorted(meta)}")
        return False
    mine = generate(ref, torch.tensor([prompt]), args.tokens, mtp_draft_tokens=args.mtp)
    per_position = ", ".join(f"{a:.2f}" for a in mine.acceptance_per_position)
    print(f"MTP k={args.mtp}: SGLang accept rate {meta['spec_accept_rate']:.3f}, accept length "
          f"{meta['spec_accept_length']:.2f} ({meta['spec_num_correct_drafts']}/"
          f"{meta['spec_num_proposed_drafts']} drafts, {meta['spec_verify_ct']} verifications); "
          f"reference {mine.acceptance_rate:.3f}, length {mine.acceptance_length:.2f} "
          f"({mine.accepted}/{mine.drafted}; per position {per_position})")  # fmt: skip
    diff = abs(meta["spec_accept_rate"] - mine.acceptance_rate)
    if diff > args.acceptance_tolerance:
        print(f"FAIL: acceptance differs by {diff:.3f} > {args.acceptance_tolerance}")
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
