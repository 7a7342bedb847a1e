"""A small byte-level BPE tokenizer with GLM-5's 20 added tokens at ids 384-403 (spec section 16).

Built with the ``tokenizers`` library from an embedded corpus, so it is deterministic and needs
no download. Saved as ``tokenizer.json`` + ``tokenizer_config.json`` (with the chat template).
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from glm52_plugin.presets import GLM_SPECIAL_TOKENS, TOY_BASE_VOCAB
from glm52_plugin.toy.chat import chat_template_source

_CORPUS = """\
GLM-5.2 is a mixture-of-experts language model with multi-head latent attention and a lightning
indexer that selects the top tokens for sparse attention. IndexShare reuses one indexer across
every four layers. The quick brown fox jumps over the lazy dog. What is the weather in Paris
today? Let me check the weather for you. The answer is 42. def main(): return {"city": "Paris",
"days": 3} Hello, world! Thinking about the question step by step before answering the user.
The function get_weather takes a city and a number of days and returns a forecast.
"""


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOY_BASE_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    if tok.get_vocab_size() != TOY_BASE_VOCAB:
        raise RuntimeError(
            f"toy BPE has {tok.get_vocab_size()} entries, expected {TOY_BASE_VOCAB}: corpus too small"
        )
    tok.add_special_tokens(list(GLM_SPECIAL_TOKENS))
    for i, t in enumerate(GLM_SPECIAL_TOKENS):
        assert tok.token_to_id(t) == TOY_BASE_VOCAB + i, t
    return tok


def save_tokenizer(out: Path, eos_token_ids: tuple[int, ...]) -> None:
    tok = build_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    (out / "chat_template.jinja").write_text(chat_template_source())
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 4096,
        "eos_token": GLM_SPECIAL_TOKENS[0],
        "pad_token": GLM_SPECIAL_TOKENS[0],
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(TOY_BASE_VOCAB + i): {"content": t, "special": True}
            for i, t in enumerate(GLM_SPECIAL_TOKENS)
        },
        "chat_template": chat_template_source(),
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
