"""Run renderings of many programs and collect what each prints: the check that five renderings agree.

One compile per language for a whole batch (javac on all classes, `go build ./...` on all packages),
so checking ten programs costs a few compiler starts, not fifty. Toolchains that are missing are
reported, not failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tools.parallel_programs import LANGS

TOOLS = {"python": ("python3",), "javascript": ("node",), "cpp": ("g++",), "java": ("javac", "java"),
         "go": ("go",)}


def available(lang: str) -> bool:
    return all(shutil.which(t) for t in TOOLS[lang])


def _run(argv: list[str], cwd: Path, timeout: float, env: dict | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def run_batch(lang: str, texts: Sequence[str], work: Path, timeout: float = 120.0) -> list[str]:
    """The stdout of each rendering in ``texts`` (all in ``lang``), compiled as one batch."""
    work = Path(work) / lang
    work.mkdir(parents=True, exist_ok=True)
    if lang == "python":
        out = []
        for k, text in enumerate(texts):
            (work / f"p{k}.py").write_text(text)
            out.append(_run(["python3", "-I", f"p{k}.py"], work, timeout))
        return out
    if lang == "javascript":
        out = []
        for k, text in enumerate(texts):
            (work / f"p{k}.js").write_text(text)
            out.append(_run(["node", f"p{k}.js"], work, timeout))
        return out
    if lang == "cpp":
        # one translation unit: each program in its own namespace, its main renamed, one real main
        includes, bodies = set(), []
        for k, text in enumerate(texts):
            lines = text.splitlines()
            includes.update(line for line in lines if line.startswith("#include"))
            body = "\n".join(line for line in lines if not line.startswith("#include"))
            bodies.append(f"namespace p{k} {{\n{body.replace('int main()', 'int run()', 1)}\n}}\n")
        calls = "".join(f'    p{k}::run();\n    std::cout << \'\\0\';\n' for k in range(len(texts)))
        source = "\n".join(sorted(includes | {"#include <iostream>"})) + "\n" + "".join(bodies)
        (work / "all.cpp").write_text(source + f"int main() {{\n{calls}    return 0;\n}}\n")
        _run(["g++", "-std=c++17", "-O0", "-w", "all.cpp", "-o", "all"], work, timeout)
        return _run(["./all"], work, timeout).split("\0")[:-1]
    if lang == "java":
        files = []
        for k, text in enumerate(texts):
            (work / f"Main{k}.java").write_text(text.replace("public class Main", f"public class Main{k}", 1))
            files.append(f"Main{k}.java")
        calls = "\n".join(f'        Main{k}.main(args);\n        System.out.print("\\u0000");'
                          for k in range(len(texts)))
        (work / "Runner.java").write_text(f"public class Runner {{\n    public static void main(String[] args) {{\n"
                                          f"{calls}\n    }}\n}}\n")
        _run(["javac", "-nowarn", "-d", ".", "Runner.java", *files], work, timeout)
        text = _run(["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp", ".", "Runner"], work, timeout)
        return text.split("\u0000")[:-1]
    if lang == "go":
        (work / "go.mod").write_text("module parallel\n\ngo 1.18\n")
        for k, text in enumerate(texts):
            (work / f"p{k}").mkdir(exist_ok=True)
            (work / f"p{k}" / "main.go").write_text(text)
        (work / "bin").mkdir(exist_ok=True)
        env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local", "GO111MODULE": "on"}
        _run(["go", "build", "-o", "bin/", "./..."], work, timeout, env)
        return [_run([f"./bin/p{k}"], work, timeout) for k in range(len(texts))]
    raise ValueError(lang)


def outputs(texts_by_lang: dict[str, Sequence[str]], work: Path, langs: Sequence[str] = LANGS) -> dict[str, list[str]]:
    """Stdout per language for every language whose toolchain is present."""
    return {lang: run_batch(lang, texts_by_lang[lang], work) for lang in langs if available(lang)}
