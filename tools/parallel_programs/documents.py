"""Training documents from parallel programs, decontaminated against the evaluation data.

Layouts: "alone" puts one rendering in a document (the language rotates with a seeded start), "apart"
gives each program five documents, one per language (parallel content, never side by side), "pairs"
puts two renderings of one program side by side, "all" all five; in the last two each rendering is
preceded by a comment line naming its language, as parallel text is laid out in multilingual
pretraining. A document sharing a normalized 8-line window with a demo-corpus or HumanEval-X program
(tools.demo_model's ExclusionIndex) is dropped and counted.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tools.parallel_programs import LANGS, render
from tools.parallel_programs.generate import generate, program_key
from tools.parallel_programs.ir import Program

LAYOUTS = ("alone", "apart", "pairs", "all")
TITLES = {"cpp": "C++", "java": "Java", "python": "Python", "go": "Go", "javascript": "JavaScript"}


@dataclass(frozen=True)
class Document:
    id: str
    program: str  # the template kind
    key: str  # a short hash of the program's meaning: equal for renderings of one program
    langs: tuple[str, ...]
    text: str


@dataclass
class DropCount:
    """Documents generated and dropped by decontamination (filled while iterating)."""

    generated: int = 0
    dropped: int = 0
    dropped_ids: list[str] = field(default_factory=list)


def language_line(lang: str, rng: random.Random) -> str:
    mark = "#" if lang == "python" else "//"
    word = rng.choice(("{}", "{} version", "In {}:", "Language: {}", "{} implementation"))
    return f"{mark} {word.format(TITLES[lang])}"


def compose(program: Program, langs: Iterable[str], seed: int, header: bool) -> str:
    """The renderings of ``program`` in ``langs``, each with its own seeded style, blank-line separated."""
    rng = random.Random(f"{seed}/header")
    parts = []
    for lang in langs:
        body = render(program, lang, seed)
        parts.append(f"{language_line(lang, rng)}\n{body}" if header else body)
    return "\n".join(parts)


def raw_documents(n: int, seed: int, layout: str) -> Iterator[Document]:
    """``n`` documents of distinct programs (no decontamination)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    rng = random.Random(f"documents/{seed}/{layout}")
    start = rng.randrange(len(LANGS))
    made = 0
    for k, program in enumerate(generate(seed)):
        if made >= n:
            return
        key = hashlib.blake2b(program_key(program).encode(), digest_size=8).hexdigest()
        if layout == "apart":
            for lang in rng.sample(LANGS, len(LANGS))[:n - made]:
                made += 1
                yield Document(f"pp-{seed}-{layout}-{k}-{lang}", program.kind, key, (lang,),
                               compose(program, (lang,), seed * 1_000_003 + k, header=False))
            continue
        made += 1
        if layout == "alone":
            langs: tuple[str, ...] = (LANGS[(start + k) % len(LANGS)],)
        elif layout == "pairs":
            langs = tuple(rng.sample(LANGS, 2))
        else:
            langs = tuple(rng.sample(LANGS, len(LANGS)))
        text = compose(program, langs, seed * 1_000_003 + k, header=layout != "alone")
        yield Document(f"pp-{seed}-{layout}-{k}", program.kind, key, langs, text)


def exclusion_index(patterns: Iterable[str] | None = None, n: int = 8):
    """The demo builder's index over the demo corpus and HumanEval-X (patterns that match nothing are skipped)."""
    from tools.demo_model import DEFAULT_EXCLUDE, build_exclusion_index, expand_globs

    return build_exclusion_index(expand_globs(DEFAULT_EXCLUDE if patterns is None else patterns), n=n)


def clean(docs: Iterable[Document], index, count: DropCount | None = None) -> Iterator[Document]:
    """The documents that share no excluded window; ``count`` records what was dropped."""
    count = count if count is not None else DropCount()
    for doc in docs:
        count.generated += 1
        if index is not None and index.matches(doc.text):
            count.dropped += 1
            count.dropped_ids.append(doc.id)
            continue
        yield doc


def documents(n: int, seed: int = 0, layout: str = "pairs", index=None,
              count: DropCount | None = None) -> Iterator[Document]:
    """Up to ``n`` decontaminated training documents (``index`` None: no exclusion check)."""
    yield from clean(raw_documents(n, seed, layout), index, count)
