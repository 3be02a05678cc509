"""Parallel programs for training the demo model: one meaning, five idiomatic surfaces.

A typed intermediate form (`ir`), a seeded generator of small algorithms in it (`generate`), one
renderer per language (`render_*`, with seeded identifiers, comments and layout from `naming`), and
training documents with decontamination against the evaluation data (`documents`).
"""

from __future__ import annotations

import random

from tools.parallel_programs.ir import Program
from tools.parallel_programs.naming import Style, draw_style

LANGS = ("cpp", "java", "python", "go", "javascript")


def renderer(lang: str, style: Style):
    from tools.parallel_programs.render_cpp import CppRenderer
    from tools.parallel_programs.render_go import GoRenderer
    from tools.parallel_programs.render_java import JavaRenderer
    from tools.parallel_programs.render_js import JsRenderer
    from tools.parallel_programs.render_python import PythonRenderer

    classes = {"cpp": CppRenderer, "java": JavaRenderer, "python": PythonRenderer, "go": GoRenderer,
               "javascript": JsRenderer}
    return classes[lang](style)


def render(program: Program, lang: str, seed: int = 0) -> str:
    """``program`` in ``lang``: a complete file whose main prints the entry's result on each input."""
    style = draw_style(program, lang, random.Random(f"{seed}/{lang}"))
    return renderer(lang, style).render(program)
