"""The sandboxed executor: real programs in real toolchains, nothing mocked."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from math import comb

import pytest

from neuro.code.sandbox import isolation
from neuro.code.corpus import CorpusError, Snippet
from neuro.code.sandbox import (
    ExecutionResult,
    pass_at_k,
    pass_at_k_by_language,
    reconcile_go_imports,
    run_program,
    run_snippet,
    sandbox_features,
    sandbox_warning,
    toolchains,
)

AVAILABLE = toolchains()
FEATURES = sandbox_features()

GO_TEST = """package main

import (
\t"testing"
\t"github.com/stretchr/testify/assert"
)

func TestInc(t *testing.T) {
\tassert.Equal(t, 2, Inc(1))
}
"""
GO_PLAIN_TEST = """package main

import "testing"

func TestInc(t *testing.T) {
\tif Inc(1) != 2 {
\t\tt.Fatalf("Inc(1) = %d", Inc(1))
\t}
}
"""
JAVA_TEST = """public class Main {
    public static void main(String[] args) {
        if (new Solution().inc(1) != 2) throw new AssertionError("inc(1)");
    }
}
"""

# lang -> (correct code, wrong code, test)
PROGRAMS = {
    "python": ("def inc(x):\n    return x + 1\n", "def inc(x):\n    return x + 2\n", "assert inc(1) == 2\n"),
    "javascript": ("const inc = (x) => x + 1;\n", "const inc = (x) => x + 2;\n", "console.assert(inc(1) === 2)\n"),
    "cpp": ("int inc(int x) { return x + 1; }\n", "int inc(int x) { return x + 2; }\n",
            "int main() { assert(inc(1) == 2); }\n"),
    "java": ("import java.util.*;\n\nclass Solution {\n    int inc(int x) { return x + 1; }\n}\n",
             "import java.util.*;\n\nclass Solution {\n    int inc(int x) { return x + 2; }\n}\n", JAVA_TEST),
    "go": ("func Inc(x int) int {\n\treturn x + 1\n}\n", "func Inc(x int) int {\n\treturn x + 2\n}\n", GO_TEST),
}
BROKEN = {
    "cpp": "int inc(int x) { return x + ; }\n",
    "java": "class Solution {\n    int inc(int x) { return x + ; }\n}\n",
    "go": "func Inc(x int) int {\n\treturn x +\n}\n",
}


def needs(lang: str):
    return pytest.mark.skipif(not AVAILABLE[lang], reason=f"no {lang} toolchain here")


def alive(marker: str) -> list[int]:
    """Host pids whose command line contains `marker`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


@pytest.mark.parametrize("lang", list(PROGRAMS))
def test_pass_and_fail(lang):
    if not AVAILABLE[lang]:
        pytest.skip(f"no {lang} toolchain here")
    good, bad, test = PROGRAMS[lang]
    ok = run_program(lang, good, test)
    assert isinstance(ok, ExecutionResult)
    assert (ok.status, ok.passed, ok.returncode) == ("passed", True, 0), ok
    ko = run_program(lang, bad, test)
    assert ko.status == "failed" and not ko.passed and ko.returncode != 0, ko
    assert ko.reason


@pytest.mark.parametrize("lang", list(BROKEN))
def test_compile_error(lang):
    if not AVAILABLE[lang]:
        pytest.skip(f"no {lang} toolchain here")
    result = run_program(lang, BROKEN[lang], PROGRAMS[lang][2])
    assert result.status == "compile_error" and not result.passed, result
    assert result.reason


@needs("go")
def test_go_code_with_its_own_package_clause():
    code = "package main\n\n" + PROGRAMS["go"][0]
    assert run_program("go", code, GO_PLAIN_TEST).passed


def test_go_imports_follow_use():
    code = 'package main\n\nimport (\n    "math"\n    "strings"\n)\n\nfunc Abs(x float64) float64 {\n' \
           '\treturn math.Abs(x)\n}\n'
    test = 'package main\n\nimport "testing"\n\nfunc TestAbs(t *testing.T) {\n' \
           '\tif Abs(-2) != math.Sqrt(4) || strconv.Itoa(1) != "1" {\n\t\tt.Fail()\n\t}\n}\n'
    fixed_code, fixed_test = reconcile_go_imports(code, test)
    assert '"strings"' not in fixed_code and '"math"' in fixed_code  # unused import dropped
    assert all(f'"{p}"' in fixed_test for p in ("testing", "math", "strconv"))  # from the code / the std list
    assert reconcile_go_imports(fixed_code, fixed_test) == (fixed_code, fixed_test)  # nothing left to change
    if AVAILABLE["go"]:
        assert run_program("go", code, test).passed


@needs("javascript")
def test_console_assert_fails_the_run():
    result = run_program("javascript", "const x = 1;\n", "console.assert(x === 2, 'x is', x)\n")
    assert result.status == "failed" and "Assertion failed: x is 1" in result.stderr


def test_timeout_kills_the_process_group():
    marker = f"neuro-test-{uuid.uuid4().hex}"
    code = ("import subprocess, sys\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1000)', '{marker}'])\n"
            "while True:\n    pass\n")
    start = time.monotonic()
    result = run_program("python", code, "", timeout=1.5)
    assert result.status == "timeout" and not result.passed, result
    assert time.monotonic() - start < 8
    assert alive(marker) == []


@pytest.mark.skipif(not FEATURES["pid_namespace"], reason="no PID namespace here: setsid() escapes the group kill")
def test_process_that_leaves_the_group_dies_too():
    marker = f"neuro-test-{uuid.uuid4().hex}"
    code = ("import subprocess, sys\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1000)', '{marker}'],\n"
            "                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n")
    result = run_program("python", code, "print('spawned')\n", timeout=5)
    assert result.passed, result
    assert alive(marker) == []


def test_fork_bomb_is_contained():
    marker = f"neuro-test-{uuid.uuid4().hex}"
    bomb = ("import os, sys, time\n"
            "root, told = os.getpid(), False\n"
            "while True:\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        if os.getpid() == root and not told:\n"
            "            print('fork refused', flush=True)\n"
            "            told = True\n"
            "        time.sleep(0.05)\n")
    code = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {bomb!r}, '{marker}'])\n"
    start = time.monotonic()
    result = run_program("python", code, "", timeout=3)
    assert result.status == "timeout", result
    assert time.monotonic() - start < 15
    if FEATURES["nproc_limit"]:
        assert "fork refused" in result.stdout  # the per-run process budget, not just the timeout, held
    assert alive(marker) == []


MEMORY_HOGS = {
    "python": ("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))\n", ""),
    "cpp": ("#include <vector>\n", "int main() {\n    std::vector<std::vector<char>> v;\n"
            "    while (true) v.emplace_back(10000000, 'x');\n}\n"),
    "javascript": ("const blocks = [];\n", "while (true) blocks.push(new Array(1e6).fill(1.5));\n"),
    "java": ("class Solution {}\n", "public class Main {\n    public static void main(String[] a) {\n"
             "        java.util.List<long[]> l = new java.util.ArrayList<>();\n"
             "        while (true) l.add(new long[1000000]);\n    }\n}\n"),
    "go": ("var blocks [][]byte\n", "package main\n\nimport \"testing\"\n\nfunc TestHog(t *testing.T) {\n"
           "\tfor {\n\t\tblocks = append(blocks, make([]byte, 1<<24))\n\t\tblocks[len(blocks)-1][0] = 1\n\t}\n}\n"),
}


@pytest.mark.parametrize("lang", list(MEMORY_HOGS))
def test_unbounded_allocation_hits_the_memory_limit(lang):
    if not AVAILABLE[lang]:
        pytest.skip(f"no {lang} toolchain here")
    code, test = MEMORY_HOGS[lang]
    result = run_program(lang, code, test, memory_mb=256, timeout=20)
    assert result.status == "memory", result


def test_huge_output_is_capped():
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    result = run_program("python", code, "", output_limit=64 * 1024, timeout=10)
    assert result.status == "killed" and result.truncated, result
    assert len(result.stdout) == 64 * 1024


@pytest.mark.skipif(not FEATURES["network_namespace"], reason="no network namespace here")
def test_no_network():
    code = ("import socket\n"
            "try:\n"
            "    socket.create_connection(('1.1.1.1', 80), timeout=3)\n"
            "    print('connected')\n"
            "except OSError as err:\n"
            "    print('blocked', err)\n"
            "try:\n"
            "    socket.getaddrinfo('example.com', 80)\n"
            "    print('resolved')\n"
            "except OSError as err:\n"
            "    print('no dns', err)\n")
    result = run_program("python", code, "", timeout=10)
    assert result.passed, result
    assert "blocked" in result.stdout and "no dns" in result.stdout, result.stdout


@pytest.mark.skipif(not FEATURES["separate_uids"], reason="not root here: runs keep the caller's uid")
def test_program_cannot_write_outside_its_directory(tmp_path):
    tmp_path.chmod(0o755)
    target = tmp_path / "planted"
    result = run_program("python", f"open({str(target)!r}, 'w').write('x')\n", "", timeout=5)
    # denied (another uid), or, under bubblewrap, not even there
    assert result.status == "failed" and re.search("PermissionError|FileNotFoundError", result.reason), result
    assert not target.exists()


def test_sandbox_features_are_reported():
    assert FEATURES["isolation"] in ("bubblewrap", "namespaces", "none")
    assert json.loads(json.dumps(FEATURES)) == FEATURES  # the CLI's --json carries it
    assert (sandbox_warning() is None) == (FEATURES["isolation"] == "bubblewrap")


@pytest.mark.skipif(FEATURES["isolation"] != "bubblewrap", reason="the fallback is what every other test runs here")
def test_fallback_without_bubblewrap(monkeypatch):
    """Where bwrap cannot run, runs go through the namespaces (or nothing) again, and say so."""
    monkeypatch.setattr(isolation, "_isolation", lambda: "namespaces" if isolation._namespace_prefix() else "none")
    features = sandbox_features()
    assert features["isolation"] != "bubblewrap" and not features["filesystem_isolation"]
    assert "bubblewrap" in sandbox_warning()
    for lang in ("python", "cpp", "go"):
        if AVAILABLE[lang]:
            good, bad, test = PROGRAMS[lang]
            assert run_program(lang, good, test).passed, lang
            assert run_program(lang, bad, test).status == "failed", lang
    code = "import os\nprint(os.environ['HOME'] == os.getcwd())\n"
    assert run_program("python", code, "").stdout.strip() == "True"  # the fallback's home is the work folder


def test_stdin_is_closed_and_environment_clean():
    code = ("import os\nprint(sorted(os.environ))\n"
            "print(os.access(os.environ['HOME'], os.W_OK), os.access(os.environ['TMPDIR'], os.W_OK))\ninput()\n")
    result = run_program("python", code, "", timeout=5)
    assert result.status == "failed" and "EOFError" in result.reason, result
    assert "True True" in result.stdout and "VIRTUAL_ENV" not in result.stdout  # a writable home and TMPDIR


@needs("cpp")
def test_compilation_has_its_own_timeout():
    result = run_program("cpp", PROGRAMS["cpp"][0], PROGRAMS["cpp"][2], compile_timeout=0.05)
    assert result.status == "timeout" and "compilation" in result.reason, result


def test_concurrent_runs_are_independent():
    results: dict[int, ExecutionResult] = {}

    def work(i):
        results[i] = run_program("python", f"x = {i}\n", f"assert x == {i} and {i} % 2 == 0\n", timeout=10)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i].passed for i in range(4)] == [True, False, True, False]


def test_run_snippet():
    snippet = Snippet("inc/python", "python", "inc", PROGRAMS["python"][0], "Add one.", PROGRAMS["python"][2])
    assert run_snippet(snippet).passed
    assert run_snippet(snippet, code=PROGRAMS["python"][1]).status == "failed"
    no_test = Snippet("x/python", "python", "x", "x = 1\n")
    assert run_snippet(no_test).status == "error"
    with pytest.raises(CorpusError):
        run_program("cobol", "", "")


def test_pass_at_k_known_values():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(7, 7, 3) == 1.0
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    for n, c, k in [(10, 3, 1), (10, 3, 5), (20, 1, 10), (200, 17, 100), (7, 2, 6)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_pass_at_k_by_language():
    outcomes = [("python", "a", True), ("python", "a", False), ("python", "b", False), ("python", "b", False),
                ("go", "a", True), ("golang", "b", True)]
    table = pass_at_k_by_language(outcomes, ks=(1, 2))
    assert table["python"] == {1: pytest.approx(0.25), 2: pytest.approx(0.5)}
    assert table["go"] == {1: 1.0}  # k=2 needs two samples per task
