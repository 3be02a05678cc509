"""Comment stripping: programs without their prose (comments, Python docstrings), one rule for every use.

Clone detection strips it so matches rest on the code, and summarization transfer so the model cannot
copy a summary that the program states in a comment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from neuro.code.corpus import Snippet


def _prose_ranges(node, lang: str, out: list[tuple[int, int]]) -> None:
    if "comment" in node.type:
        out.append((node.start_byte, node.end_byte))
        return
    if lang == "python" and node.type == "expression_statement" and node.named_child_count == 1 \
            and node.named_children[0].type == "string":
        out.append((node.start_byte, node.end_byte))  # a docstring (or a bare string statement)
        return
    for child in node.children:
        _prose_ranges(child, lang, out)


def strip_comments(code: str, lang: str) -> str:
    """The code without comments and Python docstrings (tree-sitter), blank lines and trailing spaces dropped.

    Parallel corpora such as HumanEval-X carry the same English docstring in every language, which
    lets any lexical method match clones by their prose; evaluating on stripped code asks whether the
    model matches the programs themselves. Transfer prompts use it too: the demo corpus states each
    summary in a comment. Every bare string statement counts as a docstring, wherever it stands.
    """
    from neuro.code.syntax import parse

    data = code.encode("utf-8")
    ranges: list[tuple[int, int]] = []
    _prose_ranges(parse(code, lang).root_node, lang, ranges)
    kept, end = [], 0
    for a, b in sorted(ranges):
        kept.append(data[end:a])
        end = max(end, b)
    kept.append(data[end:])
    text = b"".join(kept).decode("utf-8", "replace")
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip()) + "\n"


def without_comments(snippets: Sequence[Snippet]) -> list[Snippet]:
    """The corpus with `strip_comments` applied to every program (ids and tasks unchanged)."""
    return [replace(s, code=strip_comments(s.code, s.lang)) for s in snippets]
