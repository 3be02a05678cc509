"""tree-sitter parsing for the five languages: token -> syntax node alignment, language detection."""

from __future__ import annotations

import importlib
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from tree_sitter import Language, Node, Parser, Tree

from neuro.code.corpus import LANGS, normalize_lang

_local = threading.local()  # tree-sitter parsers are not thread-safe: one per thread and language


@cache
def language(lang: str) -> Language:
    lang = normalize_lang(lang)
    grammar = {"cpp": "tree_sitter_cpp", "java": "tree_sitter_java", "python": "tree_sitter_python",
               "go": "tree_sitter_go"}.get(lang, "tree_sitter_javascript")
    return Language(importlib.import_module(grammar).language())


def parse(code: str, lang: str) -> Tree:
    parsers = getattr(_local, "parsers", None)
    if parsers is None:
        parsers = _local.parsers = {}
    lang = normalize_lang(lang)
    if lang not in parsers:
        parsers[lang] = Parser(language(lang))
    return parsers[lang].parse(code.encode("utf-8"))


def error_bytes(node: Node) -> int:
    """Bytes covered by ERROR nodes plus one per MISSING node under `node`."""
    if not node.has_error:
        return 0
    if node.is_error:
        return max(1, node.end_byte - node.start_byte)
    if node.is_missing:
        return 1
    return sum(error_bytes(child) for child in node.children)


def parse_errors(code: str, lang: str) -> int:
    """Number of ERROR and MISSING nodes: 0 for a program that parses cleanly."""
    count, stack = 0, [parse(code, lang).root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        if node.has_error:
            stack.extend(node.children)
    return count


def char_to_byte_offsets(text: str) -> list[int]:
    """`out[i]` is the UTF-8 byte offset of character i (and `out[len(text)]` the total size)."""
    out = [0] * (len(text) + 1)
    total = 0
    for i, ch in enumerate(text):
        out[i] = total
        total += len(ch.encode("utf-8", "surrogatepass"))
    out[len(text)] = total
    return out


@dataclass(frozen=True)
class TokenNode:
    """The smallest named syntax node enclosing a token (None for whitespace-only tokens)."""

    type: str | None
    start_byte: int = 0
    end_byte: int = 0


def align_tokens(code: str, lang: str, offsets: Sequence[tuple[int, int]],
                 tree: Tree | None = None) -> list[TokenNode]:
    """Map each token's character span to the smallest named tree-sitter node that encloses it.

    Offsets are character offsets as Hugging Face tokenizers return them; tree-sitter works in
    bytes, so spans are converted. Leading and trailing whitespace of a token is ignored (byte-level
    BPE glues the space before a word onto it); a token that is only whitespace, or has an empty
    span (special tokens), maps to `TokenNode(None)`.
    """
    tree = tree or parse(code, lang)
    byte_at = char_to_byte_offsets(code)
    root = tree.root_node
    out = []
    for start, end in offsets:
        start, end = max(0, start), min(len(code), end)
        while start < end and code[start].isspace():
            start += 1
        while end > start and code[end - 1].isspace():
            end -= 1
        if start >= end:
            out.append(TokenNode(None))
            continue
        b0, b1 = byte_at[start], byte_at[end]
        node = root.named_descendant_for_byte_range(b0, b1) or root
        out.append(TokenNode(node.type, node.start_byte, node.end_byte))
    return out


_CUES: dict[str, list[tuple[str, float]]] = {
    "cpp": [(r"#include\s*[<\"]", 2.0), (r"\bstd::", 1.5), (r"\busing namespace\b", 1.5),
            (r"\btemplate\s*<", 1.5), (r"\bcout\b|\bcin\b", 1.0), (r"\w+::\w+", 0.5),
            (r"\b(unsigned|size_t|nullptr|const\s+\w+\s*&)", 0.8), (r"->", 0.2)],
    "java": [(r"\bpublic\s+(static\s+)?(class|void|int|boolean|String)\b", 1.5),
             (r"\bSystem\.out\.", 1.5), (r"\bimport\s+java\.", 2.0), (r"\bString\[\]", 1.0),
             (r"\bnew\s+\w+(<.*>)?\(", 0.5), (r"\b(private|protected)\b", 0.8), (r"@Override", 1.5),
             (r"\bList<\w+>|\bArrayList<", 1.0)],
    "python": [(r"^\s*def\s+\w+\s*\(.*\)\s*(->\s*[^:]+)?:\s*$", 2.0), (r"^\s*(import|from)\s+\w+", 0.8),
               (r"\bself\b", 0.8), (r"^\s*(elif|except|with)\b", 1.0), (r"\bNone\b|\bTrue\b|\bFalse\b", 0.5),
               (r"^\s*class\s+\w+(\(.*\))?:\s*$", 1.5), (r"\blen\(", 0.4), (r'"""', 1.0)],
    "go": [(r"^\s*package\s+\w+", 2.0), (r"\bfunc\s+(\(\w+\s+\*?\w+\)\s*)?\w+\(", 2.0), (r":=", 1.0),
           (r"\bfmt\.", 1.5), (r"\bchan\b|\bgo\s+func\b|\bdefer\b", 1.0), (r"\[\]\w+", 0.5),
           (r"\bnil\b", 0.6)],
    "javascript": [(r"\bfunction\s*\w*\s*\(", 1.2), (r"=>", 0.8), (r"\bconsole\.log\b", 1.5),
                   (r"\b(const|let|var)\s+\w+\s*=", 1.0), (r"===|!==", 1.2), (r"\brequire\(", 1.2),
                   (r"\bundefined\b|\bmodule\.exports\b|\bexport\s+(default|const|function)", 1.2)],
}

_COMPILED = {lang: [(re.compile(p, re.M), w) for p, w in cues] for lang, cues in _CUES.items()}


@dataclass(frozen=True)
class Detection:
    lang: str
    confidence: float
    scores: dict[str, float]
    error_rates: dict[str, float]

    @property
    def cue(self) -> float:
        """The lexical cue weight behind the best language's score (score = cue - 8 x error rate)."""
        return self.scores[self.lang] + 8.0 * self.error_rates[self.lang]


NOT_CODE_ERROR_SHARE = 0.15  # more than this share of bytes fails to parse in every language: not code
UNCUED_ERROR_SHARE = 0.05    # ... or more than this in the best language, with no cue of that language either
STRONG_CUE = 1.0             # a cue weight this large (e.g. a `def` line, `package`, `#include`) marks code


def not_code_share(detection: Detection) -> float | None:
    """The parse-error share that makes the text look like something other than code (prose, a log), or None
    when it looks like code. Prose parses badly everywhere, or in one lenient grammar (a Java parse of an
    English sentence fails on ~10 % of its bytes) with none of that language's cues, where every program of
    the demo corpus and HumanEval-X parses with under 4 % errors in its detected language."""
    best = min(detection.error_rates.values())
    if best > NOT_CODE_ERROR_SHARE:
        return best
    own = detection.error_rates[detection.lang]
    if own > UNCUED_ERROR_SHARE and detection.cue < STRONG_CUE:
        return own
    return None


def detect_language(code: str, candidates: Sequence[str] = LANGS) -> Detection:
    """Guess the language of pasted code from tree-sitter error rates plus cheap lexical cues.

    Score per language = cue weight (capped) - 8 x share of bytes in parse errors; the confidence is
    the softmax of the scores. Short or ambiguous code gets a low confidence, not a wrong certainty.
    """
    if not code.strip():
        raise ValueError("no code to detect a language from")
    size = max(1, len(code.encode("utf-8")))
    scores, rates = {}, {}
    for lang in candidates:
        rate = min(1.0, error_bytes(parse(code, lang).root_node) / size)
        cue = min(5.0, sum(w for pattern, w in _COMPILED[lang] if pattern.search(code)))
        rates[lang] = rate
        scores[lang] = cue - 8.0 * rate
    top = max(scores, key=lambda lang: scores[lang])
    norm = sum(math.exp(s - scores[top]) for s in scores.values())
    return Detection(top, 1.0 / norm, scores, rates)
