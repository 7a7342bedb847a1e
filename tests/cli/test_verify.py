"""``glm52 verify`` against small fake servers (http.server in a thread) speaking vLLM's OpenAI
completions API and SGLang's native /generate.

The honest fakes answer with the reference's own greedy tokens, decoded incrementally with its
KV cache (``reference.generate``), an independent path from verify's single teacher-forced
forward; the dishonest ones change one token to the reference's least likely one at that step.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from glm52_plugin.cli.main import main
from glm52_plugin.reference.generate import generate
from glm52_plugin.served_check import build_prompts

NEW = 5  # served tokens per prompt: enough steps to place a wrong one, quick on the toy
Answer = Callable[[list[int], int], list[int]]


@contextmanager
def _serve(engine: str, answer: Answer) -> Iterator[tuple[str, list[dict]]]:
    """A fake server on a free port; yields (base URL, the request bodies it received)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if engine == "vllm" and self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "toy", "object": "model"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(body)
            if engine == "vllm" and self.path == "/v1/completions":
                tokens = answer(body["prompt"], body["max_tokens"])
                choice = {"index": 0, "text": "", "token_ids": tokens, "finish_reason": "length"}
                self._send(200, {"object": "text_completion", "choices": [choice]})
            elif engine == "sglang" and self.path == "/generate":
                tokens = answer(body["input_ids"], body["sampling_params"]["max_new_tokens"])
                self._send(200, {"text": "", "output_ids": tokens, "meta_info": {}})
            else:
                self._send(404, {"error": f"no route {self.path}"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def toy(toy_checkpoints):
    from glm52_plugin.reference import Glm52ForCausalLM

    path = toy_checkpoints[2]
    return path, Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)


def _greedy(model) -> Answer:
    return lambda prompt, n: generate(model, torch.tensor([prompt]), n).tokens[0]


def _last_token_worst(model) -> Answer:
    """Greedy tokens, the last one replaced by the reference's least likely token there."""

    def answer(prompt: list[int], n: int) -> list[int]:
        tokens = generate(model, torch.tensor([prompt]), n).tokens[0]
        logits = model(torch.tensor([prompt + tokens[:-1]]))[0, -1]
        return [*tokens[:-1], int(logits.argmin())]

    return answer


def _verify(path, url: str, *extra: str) -> list[str]:
    return ["verify", "--model", str(path), "--base-url", url, "--max-new-tokens", str(NEW),
            *extra]  # fmt: skip


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_honest_server_passes(toy, engine, capsys) -> None:
    path, model = toy
    with _serve(engine, _greedy(model)) as (url, received):
        assert main([*_verify(path, url, "--engine", engine, "--prompts", "2")]) == 0
    out = capsys.readouterr().out
    assert out.count(f"PASS: {NEW}/{NEW} tokens are the reference's argmax") == 2, out
    assert out.rstrip().endswith("all 2 prompts: PASS")
    # the prompts are longer than the toy's index_topk (16), distinct, and the same on a rerun
    sent = [r["prompt"] if engine == "vllm" else r["input_ids"] for r in received]
    assert len(sent) == 2
    assert sent[0] != sent[1]
    assert all(len(p) > model.config.index_topk for p in sent)
    assert sent == build_prompts(path / "tokenizer.json", 2, len(sent[0]))
    # every request asks for greedy decoding that ignores EOS
    for r in received:
        params = r if engine == "vllm" else r["sampling_params"]
        assert params["temperature"] == 0
        assert params["ignore_eos"] is True


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_a_wrong_token_fails_with_its_step_and_gap(toy, engine, capsys) -> None:
    path, model = toy
    with _serve(engine, _last_token_worst(model)) as (url, received):
        code = main([*_verify(path, url, "--engine", engine, "--prompts", "1", "--json")])
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["pass"] is False
    (entry,) = report["prompts"]
    assert entry["pass"] is False
    assert entry["failing_steps"] == [NEW - 1]
    # the gap is the reference's own max - min log-probability at that step
    prompt = received[0]["prompt"] if engine == "vllm" else received[0]["input_ids"]
    tokens = _greedy(model)(prompt, NEW)
    logp = model(torch.tensor([prompt + tokens[:-1]]))[0, -1].log_softmax(-1)
    assert entry["worst_gap"] == pytest.approx(float(logp.max() - logp.min()), abs=1e-3)
    assert entry["gaps"][: NEW - 1] == pytest.approx([0.0] * (NEW - 1), abs=1e-4)


def test_text_report_names_the_failing_step(toy, capsys) -> None:
    path, model = toy
    with _serve("vllm", _last_token_worst(model)) as (url, _):
        assert main([*_verify(path, url, "--prompts", "1")]) == 1
    out = capsys.readouterr().out
    assert f"FAIL: {NEW - 1}/{NEW} tokens" in out
    assert f"failing steps [{NEW - 1}]" in out
    assert out.rstrip().endswith("1 of 1 prompts failed: FAIL")


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([10**6] * NEW, "served token ids outside the model's vocabulary"),
        ([], "the server returned no tokens"),
    ],
)
def test_unusable_tokens_fail(toy, tokens, message, capsys) -> None:
    path, _ = toy
    with _serve("sglang", lambda prompt, n: tokens) as (url, _):
        assert main([*_verify(path, url, "--engine", "sglang", "--prompts", "1")]) == 1
    out = capsys.readouterr().out
    assert f"FAIL: {message}" in out
    assert out.rstrip().endswith("1 of 1 prompts failed: FAIL")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_unreachable_server_is_one_line_and_exit_2(toy, engine, capsys) -> None:
    path, _ = toy
    url = f"http://127.0.0.1:{_free_port()}"
    assert main([*_verify(path, url, "--engine", engine, "--timeout", "5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("glm52 verify: error: cannot reach")
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err


def test_a_server_error_is_one_line_and_exit_2(toy, capsys) -> None:
    path, _ = toy
    # a fake that only knows vLLM's routes, asked as SGLang: /generate answers 404
    with _serve("vllm", lambda prompt, n: []) as (url, _):
        assert main([*_verify(path, url, "--engine", "sglang")]) == 2
    err = capsys.readouterr().err.strip()
    assert "HTTP 404" in err
    assert "/generate" in err
    assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt-len", "16"], "must exceed the checkpoint's index_topk (16)"),
        (["--prompt-len", "4095"], "max_position_embeddings"),
        (["--prompts", "0"], "not positive"),
        (["--max-memory-gb", "-1"], "not positive"),
        (["--engine", "trt"], "invalid choice"),
        (["--activations", "fp8"], "invalid choice"),
    ],
)
def test_bad_options_exit_2(toy, extra, message, capsys) -> None:
    path, _ = toy
    try:
        code = main([*_verify(path, "http://127.0.0.1:9", *extra)])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_checkpoint_or_tokenizer_exit_2(tmp_path, toy, capsys) -> None:
    assert main(_verify(tmp_path / "nope", "http://127.0.0.1:9")) == 2
    assert "no config.json" in capsys.readouterr().err
    (tmp_path / "config.json").write_text((toy[0] / "config.json").read_text())
    assert main(_verify(tmp_path, "http://127.0.0.1:9")) == 2
    assert "no tokenizer.json" in capsys.readouterr().err


def test_streamed_reference_passes_an_honest_server(toy, capsys) -> None:
    pytest.importorskip(
        "glm52_plugin.reference.stream", reason="stream_logits is not in this build"
    )
    path, model = toy
    with _serve("vllm", _greedy(model)) as (url, _):
        code = main([*_verify(path, url, "--prompts", "2", "--reference", "stream", "--json")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reference"] == "stream"
    assert [e["exact"] for e in report["prompts"]] == [NEW, NEW]


def test_streamed_reference_that_does_not_fit_is_one_line_exit_1(toy, capsys) -> None:
    pytest.importorskip(
        "glm52_plugin.reference.stream", reason="stream_logits is not in this build"
    )
    path, model = toy
    with _serve("vllm", _greedy(model)) as (url, _):
        code = main([*_verify(path, url, "--prompts", "1", "--max-memory-gb", "0.001")])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "max_memory_gb" in err
    assert len(err.splitlines()) == 1, err


def test_nvfp4_activations_pass_a_w4a4_server(toy_nvfp4_checkpoints, capsys) -> None:
    """A fake serving the W4A4 reference's greedy tokens, as Blackwell's native NVFP4 kernels
    would: verify --activations nvfp4 compares against the same emulation, gap 0 at every step."""
    from glm52_plugin.reference import Glm52ForCausalLM

    path = toy_nvfp4_checkpoints[2]
    w4a4 = Glm52ForCausalLM.from_pretrained(
        path, dtype=torch.float32, progress=False, activations="nvfp4"
    )
    with _serve("vllm", _greedy(w4a4)) as (url, _):
        code = main([*_verify(path, url, "--prompts", "1", "--activations", "nvfp4", "--json")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["activations"] == "nvfp4"
    assert report["prompts"][0]["gaps"] == pytest.approx([0.0] * NEW, abs=1e-4)
