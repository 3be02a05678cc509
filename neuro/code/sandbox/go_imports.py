"""Go import reconciliation: make a program and its test file each import exactly what they use, as
goimports would (HumanEval-X's prompts import packages their solutions never use, and Go rejects that)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tree_sitter import Node

# Packages a Go file may use without importing them (HumanEval-X's prompts and tests rely on these).
_GO_STD = {p.rsplit("/", 1)[-1]: (None, p) for p in (
    "bytes", "crypto/md5", "errors", "fmt", "math", "math/rand", "reflect", "regexp", "sort", "strconv",
    "strings", "time", "unicode")}

_GO_DECLARING = {"short_var_declaration": "left", "var_spec": "name", "const_spec": "name",
                 "parameter_declaration": "name", "range_clause": "left"}


def _field(node: Node, name: str) -> Node:
    """A child the grammar always gives `node` (the file parsed without errors)."""
    child = node.child_by_field_name(name)
    if child is None:
        raise ValueError(f"a Go {node.type} without its {name}")
    return child


def _text(node: Node) -> str:
    """The node's source text (a tree parsed from bytes always has it)."""
    text = node.text
    if text is None:
        raise ValueError(f"a Go {node.type} without its text")
    return text.decode()


def _go_file(source: str):
    """(import specs as (alias, path), byte spans of the import declarations, used names, declared names)."""
    from neuro.code.syntax import parse

    root = parse(source, "go").root_node
    if root.has_error:
        return None
    specs: list[tuple[str | None, str]] = []
    spans: list[tuple[int, int]] = []
    used: set[str] = set()
    declared: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(reversed(node.children))  # document order, so kept imports keep their order
        if node.type == "import_declaration":
            spans.append((node.start_byte, node.end_byte))
        elif node.type == "import_spec":
            alias = node.child_by_field_name("name")
            path = _text(_field(node, "path")).strip('"`')
            specs.append((_text(alias) if alias else None, path))
        elif node.type == "selector_expression" and _field(node, "operand").type == "identifier":
            used.add(_text(_field(node, "operand")))
        elif node.type == "qualified_type":
            used.add(_text(_field(node, "package")))
        elif node.type in _GO_DECLARING:
            target = node.child_by_field_name(_GO_DECLARING[node.type])
            names = [target] if target is not None and target.type == "identifier" else (
                [c for c in target.children if c.type == "identifier"] if target is not None else [])
            declared.update(_text(n) for n in names)
    return specs, spans, used, declared


def _go_package_name(alias: str | None, path: str) -> str | None:
    """The name an import binds, or None where the path does not tell (then the import is kept)."""
    last = path.rsplit("/", 1)[-1]
    if alias:
        return alias
    return None if re.search(r"[^a-z0-9]|^v\d+$", last) else last


def reconcile_go_imports(code: str, test: str) -> tuple[str, str]:
    """Make each Go file import what it uses, as goimports would: drop unused imports, add missing ones.

    The program and its test are separate files of one package, and Go rejects an unused import:
    HumanEval-X's prompts import packages their solutions never use, and its tests use packages only
    the prompt imports (e.g. math). Missing imports are taken from either file or a few standard
    packages. A file that does not parse, or needs nothing changed, is returned as it is.
    """
    files = [code, test]
    parsed = [_go_file(f) for f in files]
    pool = dict(_GO_STD)
    for info in parsed:
        for alias, path in info[0] if info else ():
            name = _go_package_name(alias, path)
            if name and name not in ("_", "."):
                pool[name] = (alias, path)
    out = []
    for source, info in zip(files, parsed, strict=True):
        if info is None:
            out.append(source)
            continue
        specs, spans, used, declared = info
        keep = [(a, p) for a, p in specs if _go_package_name(a, p) in {None, "_", ".", *used}]
        have = {_go_package_name(a, p) for a, p in keep}
        keep += [pool[n] for n in sorted(used - have - declared) if n in pool]
        if keep == specs:
            out.append(source)
            continue
        raw = source.encode()
        for start, end in sorted(spans, reverse=True):
            raw = raw[:start] + raw[end:]
        block = "import (\n" + "".join(f"\t{a + ' ' if a else ''}\"{p}\"\n" for a, p in keep) + ")\n" if keep else ""
        text = raw.decode()
        clause = re.search(r"(?m)^package\s+\w+[^\n]*\n?", text)
        cut = clause.end() if clause else 0
        out.append(text[:cut] + "\n" + block + "\n" + text[cut:].lstrip("\n"))
    return out[0], out[1]
