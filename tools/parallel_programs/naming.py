"""Seeded surface choices for one rendering: identifiers (synonyms in the language's case), comments, layout."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# role -> synonyms (word lists). Every word list is safe as an identifier in all five languages.
LEXICON: dict[str, tuple[tuple[str, ...], ...]] = {
    "xs": (("nums",), ("values",), ("arr",), ("items",), ("data",), ("numbers",), ("xs",), ("seq",)),
    "s": (("s",), ("text",), ("word",), ("line",), ("src",), ("input", "str")),
    "n": (("n",), ("num",), ("value",), ("x",), ("k",)),
    "m": (("m",), ("limit",), ("bound",), ("base",)),
    "x": (("x",), ("v",), ("elem",), ("item",), ("cur",), ("val",)),
    "i": (("i",), ("idx",), ("pos",), ("j",)),
    "j": (("j",), ("k",), ("right",), ("hi",)),
    "lo": (("lo",), ("left",), ("l",), ("start",)),
    "hi": (("hi",), ("right",), ("r",), ("end",)),
    "acc": (("acc",), ("total",), ("result",), ("sum",), ("running",), ("agg",)),
    "count": (("count",), ("cnt",), ("matches",), ("hits",), ("tally",)),
    "best": (("best",), ("top",), ("champion",), ("extreme",)),
    "best_i": (("best", "idx"), ("best", "pos"), ("arg", "best"), ("where",)),
    "out": (("out",), ("res",), ("result",), ("built",), ("acc", "str")),
    "c": (("c",), ("ch",), ("letter",), ("chr", "val")),
    "a": (("a",), ("p",), ("first",)),
    "b": (("b",), ("q",), ("second",)),
    "t": (("t",), ("tmp",), ("rem",), ("carry",)),
    "d": (("d",), ("digit",), ("last", "digit")),
    "steps": (("steps",), ("rounds",), ("iters",), ("moves",)),
    "stack": (("stack",), ("stk",), ("pending",), ("pile",)),
    "seen": (("seen",), ("freq",), ("counts",), ("table",)),
    "prefix": (("prefix",), ("pre",), ("sums",), ("cumul",)),
    "depth": (("depth",), ("level",), ("nesting",)),
    "run": (("run",), ("streak",), ("cur", "len")),
    "key": (("key",), ("bucket",), ("slot",)),
    "ys": (("sorted", "copy"), ("ordered",), ("work",), ("ys",), ("buf",)),
    "mid": (("mid",), ("middle",), ("probe",), ("pivot",)),
    "target": (("target",), ("goal",), ("needle",), ("wanted",)),
}

RESERVED = {
    "and", "or", "not", "in", "is", "if", "else", "for", "while", "return", "break", "int", "char", "string",
    "str", "len", "map", "new", "var", "let", "const", "function", "func", "range", "main", "long", "print",
    "list", "max", "min", "sum", "input", "abs", "type", "default", "case", "switch", "class", "def", "lambda",
    "package", "import", "interface", "struct", "go", "select", "chan", "this", "delete", "true", "false",
}

CASES = {"python": ("snake",), "cpp": ("snake", "camel"), "java": ("camel",), "go": ("camel",),
         "javascript": ("camel",)}


def cased(words: tuple[str, ...], case: str) -> str:
    if case == "snake":
        return "_".join(words)
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


@dataclass
class Style:
    """Everything that varies between two renderings of one program in one language."""

    lang: str
    names: dict[str, str]
    comments: bool
    comment_pick: int
    brace_newline: bool  # Allman braces (C++/Java only)
    blank_lines: int  # blank lines between functions
    compound: bool  # x += y rather than x = x + y
    indent: int
    extra: dict[str, bool] = field(default_factory=dict)

    def name(self, role: str) -> str:
        return self.names[role]


def _roles_of(program) -> list[str]:
    """Every role name the program uses (function names, params, locals)."""
    from tools.parallel_programs import ir

    roles: list[str] = []

    def add(name: str) -> None:
        if name not in roles:
            roles.append(name)

    def walk(node) -> None:
        if isinstance(node, (ir.Var,)):
            add(node.name)
        elif isinstance(node, (ir.Decl, ir.Assign)):
            add(node.name)
        elif isinstance(node, (ir.For, ir.ForEach)):
            add(node.var)
        elif isinstance(node, ir.Call):
            add(node.fn)
        for value in getattr(node, "__dict__", {}).values():
            for item in value if isinstance(value, tuple) else (value,):
                if hasattr(item, "__dataclass_fields__"):
                    walk(item)

    for fn in program.functions:
        add(fn.name)
        for p, _ in fn.params:
            add(p)
        for st in fn.body:
            walk(st)
    return roles


def draw_style(program, lang: str, rng: random.Random) -> Style:
    """A seeded style: synonyms per role (distinct within the program), case per language convention."""
    case = rng.choice(CASES[lang])
    names: dict[str, str] = {}
    used: set[str] = set()
    for role in _roles_of(program):
        options = program.roles.get(role) or LEXICON.get(role) or (tuple(role.split("_")),)
        order = list(options)
        rng.shuffle(order)
        chosen = None
        for words in order:
            ident = cased(tuple(words), case)
            if ident not in used and ident not in RESERVED:
                chosen = ident
                break
        if chosen is None:
            base = cased(tuple(order[0]), case)
            k = 2
            while f"{base}{k}" in used:
                k += 1
            chosen = f"{base}{k}"
        names[role] = chosen
        used.add(chosen)
    return Style(lang=lang, names=names, comments=rng.random() < 0.6, comment_pick=rng.randrange(1 << 16),
                 brace_newline=lang in ("cpp", "java") and rng.random() < 0.3,
                 blank_lines=rng.choice((1, 1, 2)) if lang != "python" else 2, compound=rng.random() < 0.7,
                 indent=rng.choice((2, 4)) if lang in ("cpp", "javascript") else 4,
                 extra={"foreach": rng.random() < 0.5, "docstring": rng.random() < 0.5,
                        "const": rng.random() < 0.5, "idiom": rng.random() < 0.7})
