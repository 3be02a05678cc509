"""Shared fixtures: tiny random models built from configs, a tiny byte-level BPE tokenizer, snippets."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from neuro.code.corpus import Snippet  # noqa: E402
from neuro.model.loading import prepare  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HUMANEVAL_X = SHARED_DATA / "humaneval-x"

SNIPPETS = [
    Snippet("add/python", "python", "add", "def add(a, b):\n    return a + b\n", "Add two numbers."),
    Snippet("add/go", "go", "add", "package main\n\nfunc Add(a int, b int) int {\n\treturn a + b\n}\n",
            "Add two numbers."),
    Snippet("add/java", "java", "add", "class Solution {\n    int add(int a, int b) { return a + b; }\n}\n",
            "Add two numbers."),
    Snippet("rev/python", "python", "rev", "def rev(s):\n    return s[::-1]  # reverse 'héllo'\n",
            "Reverse a string."),
    Snippet("rev/go", "go", "rev", "package main\n\nfunc Rev(s string) string {\n\tr := []rune(s)\n"
            "\tfor i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {\n\t\tr[i], r[j] = r[j], r[i]\n\t}\n"
            "\treturn string(r)\n}\n", "Reverse a string."),
    Snippet("rev/java", "java", "rev", "class Solution {\n    String rev(String s) {\n"
            "        return new StringBuilder(s).reverse().toString();\n    }\n}\n", "Reverse a string."),
    Snippet("sum/python", "python", "sum", "def total(xs):\n    s = 0\n    for x in xs:\n        s += x\n"
            "    return s\n", "Sum a list."),
]


def make_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer trained in milliseconds on the test snippets."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([s.code for s in SNIPPETS] * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>")


def word_tokenizer(langs, words: int, junk: int):
    """A whole-word tokenizer for hand-built models: <bos>, <unk>, then `words` words per language (named by
    its first two letters: py0, py1, ...) and `junk` shared words (junk0, ...), in that order."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    names = [f"{lang[:2]}{i}" for lang in langs for i in range(words)] + [f"junk{i}" for i in range(junk)]
    vocab = {"<bos>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(names)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>", pad_token="<unk>")


def tiny_config(kind: str, vocab: int):
    import transformers as T

    common = dict(vocab_size=vocab, num_hidden_layers=3, num_attention_heads=4)
    llama_like = dict(common, hidden_size=32, intermediate_size=48, num_key_value_heads=2)
    if kind == "llama":
        return T.LlamaConfig(**llama_like)
    if kind == "mistral":
        return T.MistralConfig(**llama_like)
    if kind == "qwen2":
        return T.Qwen2Config(**llama_like)
    if kind == "qwen3":
        return T.Qwen3Config(**llama_like, head_dim=8)
    if kind == "gemma":
        return T.GemmaConfig(**llama_like, head_dim=8)
    if kind == "gemma2":
        return T.Gemma2Config(**llama_like, head_dim=8)
    if kind == "phi3":
        return T.Phi3Config(**llama_like, pad_token_id=0)
    if kind == "gpt_neox":
        return T.GPTNeoXConfig(**dict(common, hidden_size=32, intermediate_size=48))
    if kind == "starcoder2":
        return T.Starcoder2Config(**llama_like)
    if kind == "gpt2":
        return T.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4, n_inner=40)
    if kind == "gpt_bigcode":
        return T.GPTBigCodeConfig(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4)
    raise ValueError(kind)


ARCHITECTURES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2", "gpt_bigcode",
                 "gpt_neox", "starcoder2"]


def tiny_model(kind: str, seed: int = 0):
    from transformers import AutoModelForCausalLM

    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    config = tiny_config(kind, len(tokenizer))
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return prepare(model, tokenizer, source=f"tiny-{kind}")


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session", params=["llama", "qwen2", "gpt2"])
def tiny(request):
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def tiny_llama():
    return tiny_model("llama")


@pytest.fixture()
def snippets():
    return list(SNIPPETS)


@pytest.fixture()
def mounted(tmp_path):
    """Mount helper (root only; skipped where mounting is not allowed); unmounts afterwards."""
    mounts = []

    def mount(*args):
        result = subprocess.run(["mount", *args], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount here: {result.stderr.strip()}")
        mounts.append(args[-1])
    yield mount
    for target in reversed(mounts):
        subprocess.run(["umount", target], capture_output=True)


# --------------------------------------------------------------------------- the paper's real tokenizers
# Built once per session from the files registry packages ship (tests/real_tokenizers.py); skipped with the
# reason when a package is missing.
def _real_tokenizer(name: str):
    import real_tokenizers as R

    spec = {"llama3": R.LLAMA3, "qwen2.5": R.QWEN25}[name]
    reason = R.missing(spec)
    if reason:
        pytest.skip(reason)
    return spec, R.build_tokenizer(spec)


@pytest.fixture(scope="session")
def llama3_tokenizer():
    """Llama-3's tokenizer (128,000 ranks + 256 special tokens, BOS <|begin_of_text|> = 128000)."""
    return _real_tokenizer("llama3")[1]


@pytest.fixture(scope="session")
def qwen25_tokenizer():
    """Qwen2.5's tokenizer (151,643 ranks + 22 special tokens from 151643 on, no BOS)."""
    return _real_tokenizer("qwen2.5")[1]


@pytest.fixture(scope="session", params=["llama3", "qwen2.5"])
def real_model(request):
    """(spec, tiny random model of the paper's architecture with that tokenizer's full vocabulary, tiktoken's
    reference encoder) for Llama-3 and Qwen2.5."""
    import real_tokenizers as R

    name = request.param
    tokenizer = request.getfixturevalue("llama3_tokenizer" if name == "llama3" else "qwen25_tokenizer")
    spec = R.LLAMA3 if name == "llama3" else R.QWEN25
    return spec, R.tiny_model(spec, tokenizer), R.reference_encoding(spec)
