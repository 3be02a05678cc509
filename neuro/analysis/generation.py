"""Code generation for pass@k: prompts, sampling, truncation of completions, and evaluation (optionally
with neurons ablated), so the paper's "ablate a language's neurons, watch pass@k drop" runs end to end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from neuro.code.corpus import Snippet
from neuro.code.sandbox import pass_at_k_by_language, run_program
from neuro.code.syntax import parse
from neuro.instrument.ablation import NeuronSet
from neuro.instrument.intervention import Intervention, intervened, neuron_pairs
from neuro.instrument.tokens import encode, length_batches
from neuro.model.loading import LoadedModel
from neuro.progress import Progress

_FUNCTION_TYPES = {"function_definition", "function_declaration", "method_declaration", "arrow_function",
                   "function_expression", "method_definition", "function_item"}


def prompt_of(snippet: Snippet) -> str:
    """The generation prompt: the snippet's own, else its code up to the body of its first function
    (Python: after the docstring, if any; brace languages: after the body's opening brace)."""
    if snippet.prompt:
        return snippet.prompt
    code = snippet.code
    raw = code.encode("utf-8")
    stack = [parse(code, snippet.lang).root_node]
    while stack:
        node = stack.pop(0)
        body = node.child_by_field_name("body") if node.type in _FUNCTION_TYPES else None
        if body is not None:
            if snippet.lang == "python":
                first = body.named_children[0] if body.named_children else None
                is_doc = first is not None and first.type == "expression_statement" and \
                    first.named_children and first.named_children[0].type == "string"
                end = first.end_byte if first is not None and is_doc and len(body.named_children) > 1 \
                    else body.start_byte
                return raw[:end].decode("utf-8", "replace").rstrip(" ") + ("\n" if is_doc else "")
            return raw[: body.start_byte + 1].decode("utf-8", "replace") + "\n"
        stack = list(node.named_children) + stack
    raise ValueError(f"{snippet.id}: no function found to build a prompt from")


def _brace_deltas(text: str):
    """Yield (index, +1/-1) for each brace outside string/char literals and comments."""
    i, n, quote = 0, len(text), None
    while i < n:
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif text.startswith("//", i):
            i = text.find("\n", i)
            if i < 0:
                return
        elif text.startswith("/*", i):
            i = text.find("*/", i + 2)
            if i < 0:
                return
            i += 1
        elif ch in "\"'`":
            quote = ch
        elif ch in "{}":
            yield i, 1 if ch == "{" else -1
        i += 1


def truncate_completion(prompt: str, completion: str, lang: str) -> str:
    """Cut a completion where the prompted function ends.

    Python: before the first non-empty line that is not indented. Brace languages: right after the
    brace that closes every block the prompt opened (braces in strings and comments do not count).
    """
    if lang == "python":
        lines = completion.split("\n")
        for i, line in enumerate(lines[1:], 1):
            if line.strip() and not line[0].isspace():
                return "\n".join(lines[:i]) + "\n"
        return completion
    depth = sum(delta for _, delta in _brace_deltas(prompt))
    if depth <= 0:
        return completion
    for i, delta in _brace_deltas(completion):
        depth += delta
        if depth == 0:
            return completion[: i + 1] + "\n"
    return completion


@dataclass(frozen=True)
class GenerationParams:
    samples: int = 1
    temperature: float = 0.0  # 0: greedy (then samples must be 1)
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0

    def __post_init__(self):
        if self.samples < 1 or self.max_new_tokens < 1:
            raise ValueError("samples and max_new_tokens must be >= 1")
        if self.temperature < 0 or (self.temperature == 0 and self.samples > 1):
            raise ValueError("greedy decoding (temperature 0) gives one sample; raise the temperature")


GENERATION_TOKENS = 16384  # prompt + new tokens of the rows generated together (bounds the KV cache)

GENERATION_BATCH = 32  # prompts generated together at most


def _eos_ids(loaded: LoadedModel) -> set[int]:
    """The tokens generation stops at (the generation config's EOS, one id or several)."""
    eos = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _until_eos(row: list[int], eos: set[int]) -> list[int]:
    """A generated row up to and including its first EOS: what generating it alone returns (a batch pads the
    rows that finished early until the longest one is done)."""
    for i, token in enumerate(row):
        if token in eos:
            return row[: i + 1]
    return row


def complete(loaded: LoadedModel, prompts: Sequence[str], params: GenerationParams,
             max_prompt_tokens: int = 1024, batch_tokens: int = GENERATION_TOKENS,
             max_batch: int = GENERATION_BATCH, progress: Progress | None = None) -> list[list[str]]:
    """`params.samples` completions (text after the prompt) for each prompt.

    Prompts of similar length are generated together: left-padded (the new tokens of every row start at
    the same position), with an attention mask over the padding, so greedy decoding gives each prompt the
    tokens it gets alone. Sampling draws from the same distributions, but which random numbers a prompt
    gets depends on the batch it is in (fixed for given prompts, params and batch sizes)."""
    loaded.require_weights()
    tok = loaded.tokenizer
    encoded = [encode(loaded, prompt, max_prompt_tokens).ids for prompt in prompts]
    sample = params.temperature > 0
    eos, pad = _eos_ids(loaded), loaded.pad_id
    # a batch's rows: each prompt `samples` times, each as long as the longest prompt plus the new tokens
    budget = max(batch_tokens // params.samples, 1)
    groups = length_batches([len(ids) + params.max_new_tokens for ids in encoded], budget, max_batch)
    out: list[list[str]] = [[] for _ in prompts]
    done = 0
    with loaded.lock, torch.inference_mode():
        torch.manual_seed(params.seed)
        for group in groups:
            longest = max(len(encoded[i]) for i in group)
            ids = torch.full((len(group), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(group), longest), dtype=torch.long)
            for row, i in enumerate(group):
                ids[row, longest - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, longest - len(encoded[i]):] = 1
            generated = loaded.model.generate(
                ids.to(loaded.device), attention_mask=mask.to(loaded.device), max_new_tokens=params.max_new_tokens,
                do_sample=sample, temperature=params.temperature if sample else None,
                top_p=params.top_p if sample else None, num_return_sequences=params.samples,
                pad_token_id=pad)
            new = generated[:, longest:].tolist()  # rows: prompt-major, `samples` consecutive rows per prompt
            for row, i in enumerate(group):
                out[i] = [tok.decode(_until_eos(new[row * params.samples + j], eos), skip_special_tokens=True)
                          for j in range(params.samples)]
            done += len(group)
            if progress:
                progress(done, len(prompts))
    return out


@dataclass
class PassAtK:
    """pass@k per language, with every sample kept for inspection."""

    by_language: dict[str, dict[int, float]]
    samples: list[dict] = field(default_factory=list)  # task, lang, completion, status, reason


def evaluate_pass_at_k(loaded: LoadedModel, snippets: Sequence[Snippet], params: GenerationParams,
                       ks: Sequence[int] = (1,), ablate: NeuronSet | None = None,
                       run: Callable = run_program, progress: Progress | None = None,
                       interventions: Sequence[Intervention] = ()) -> PassAtK:
    """Generate for every snippet with a test (batched, see `complete`), run the samples, and report pass@k
    per language; while generating, `ablate`'s neurons are zeroed and `interventions` applied (one path,
    neuro.instrument.intervention)."""
    todo = [s for s in snippets if s.test]
    if not todo:
        raise ValueError("no snippet has a test to run")
    prompts = [prompt_of(s) for s in todo]
    steps = 2 * len(todo)  # generating each prompt, then running its samples
    generating = (lambda done, total: progress(done, steps)) if progress else None
    changes = list(interventions) + ([Intervention(neuron_pairs(ablate), "zero")] if ablate is not None else [])
    with intervened(loaded, *changes):
        completions = complete(loaded, prompts, params, progress=generating)
    outcomes, records = [], []
    for i, (snippet, prompt) in enumerate(zip(todo, prompts)):
        for text in completions[i]:
            program = prompt + truncate_completion(prompt, text, snippet.lang)
            result = run(snippet.lang, program, snippet.test)
            outcomes.append((snippet.lang, snippet.task, result.passed))
            records.append({"task": snippet.task, "lang": snippet.lang, "completion": text,
                            "status": result.status, "reason": result.reason})
        if progress:
            progress(len(todo) + i + 1, steps)
    return PassAtK(pass_at_k_by_language(outcomes, ks), records)
