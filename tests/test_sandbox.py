"""Hostile programs against the bubblewrap sandbox, in all five languages: each asserts its property directly.

Files the programs try to write must not exist on the host afterwards, secrets they try to read must
not reach their output, a listener on the host's 127.0.0.1 must receive nothing, every call must
return within its bound and no hostile program may pass. Skipped where bubblewrap is not the active
isolation (the fallback's guarantees are tested in test_execution.py).
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from test_execution import alive

from neuro.code.sandbox import isolation, languages, processes, runner
from neuro.code.sandbox import run_program, sandbox_features, sandbox_warning, toolchains

REPO = Path(__file__).resolve().parents[1]
AVAILABLE = toolchains()
FEATURES = sandbox_features()

pytestmark = pytest.mark.skipif(
    FEATURES["isolation"] != "bubblewrap",
    reason=f"bubblewrap is not the sandbox here (isolation: {FEATURES['isolation']}); see test_execution.py")

LANGS = ("python", "javascript", "cpp", "java", "go")
COMPILE_S = {"python": 0, "javascript": 0, "cpp": 20, "java": 20, "go": 30}  # generous: a loaded 2-core CI box


def lang_param():
    return pytest.mark.parametrize("lang", [
        pytest.param(lang, marks=pytest.mark.skipif(not AVAILABLE[lang], reason=f"no {lang} toolchain here"))
        for lang in LANGS])


def q(text: str) -> str:
    """A string literal valid in all five languages (the paths and names here are plain ASCII)."""
    return json.dumps(text)


# --------------------------------------------------------------------------- the escape attempt

def escape_program(lang: str, writes: list[tuple[str, bool]], home_name: str, reads: list[str], port: int,
                   marker: str) -> tuple[str, str]:
    """(code, test) that tries every escape, prints what happened and passes only if a forbidden one worked.

    `writes` are (path, forbidden) pairs: a write to the sandbox's own /tmp succeeds (into a private
    tmpfs) and is not an escape by itself, the property is that the host never sees the file.
    """
    if lang == "python":
        body = f"""import os, socket, subprocess, sys
escaped = False
def attempt(label, fn, forbidden):
    global escaped
    try:
        out = fn()
        print(label, "ok", out if isinstance(out, str) else "")
        escaped = escaped or forbidden
    except Exception as err:
        print(label, "denied", type(err).__name__)
writes = {[list(w) for w in writes]!r}
writes.append([os.path.join(os.environ["HOME"], {q(home_name)}), False])
for path, forbidden in writes:
    attempt("write " + path, lambda p=path: open(p, "w").write("x"), forbidden)
for path in {reads!r}:
    attempt("read " + path, lambda p=path: open(p).read(), True)
attempt("connect", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2).close(), True)
subprocess.Popen(["sh", "-c", "sleep 1000; :", {q(marker)}], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("attempted", flush=True)
sys.exit(0 if escaped else 1)
"""
        return body, ""
    if lang == "javascript":
        pairs = ", ".join(f"[{q(p)}, {str(f).lower()}]" for p, f in writes)
        code = f"""const fs = require('fs'), net = require('net'), path = require('path');
const cp = require('child_process');
let escaped = false;
function attempt(label, fn, forbidden) {{
  try {{
    const out = fn();
    console.log(label, 'ok', typeof out === 'string' ? out : '');
    if (forbidden) escaped = true;
  }} catch (e) {{ console.log(label, 'denied', e.code || String(e)); }}
}}
const writes = [{pairs}, [path.join(process.env.HOME, {q(home_name)}), false]];
for (const [p, f] of writes) attempt('write ' + p, () => fs.writeFileSync(p, 'x'), f);
for (const p of {json.dumps(reads)}) attempt('read ' + p, () => fs.readFileSync(p, 'utf8'), true);
const child = cp.spawn('sh', ['-c', 'sleep 1000; :', {q(marker)}], {{detached: true, stdio: 'ignore'}});
child.on('error', (e) => console.log('spawn denied', e.code));
child.unref();
function finish() {{ console.log('attempted'); process.exit(escaped ? 0 : 1); }}
const sock = net.connect({{host: '127.0.0.1', port: {port}}});
sock.setTimeout(2000, () => {{ console.log('connect denied timeout'); finish(); }});
sock.on('connect', () => {{ console.log('connect ok'); escaped = true; finish(); }});
sock.on('error', (e) => {{ console.log('connect denied', e.code); finish(); }});
"""
        return code, ""
    if lang == "cpp":
        calls = "".join(f"    try_write({q(p)}, {str(f).lower()});\n" for p, f in writes)
        calls += "".join(f"    try_read({q(p)});\n" for p in reads)
        code = """#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

static bool escaped = false;

void try_write(const std::string& path, bool forbidden) {
    FILE* f = fopen(path.c_str(), "w");
    if (!f) { printf("write %s denied %s\\n", path.c_str(), strerror(errno)); return; }
    fputs("x", f);
    fclose(f);
    printf("write %s ok\\n", path.c_str());
    if (forbidden) escaped = true;
}

void try_read(const std::string& path) {
    FILE* f = fopen(path.c_str(), "r");
    if (!f) { printf("read %s denied %s\\n", path.c_str(), strerror(errno)); return; }
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    printf("read %s ok %s\\n", path.c_str(), buf);
    escaped = true;
}
"""
        test = f"""int main() {{
{calls}    try_write(std::string(getenv("HOME")) + "/" + {q(home_name)}, false);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{{}};
    addr.sin_family = AF_INET;
    addr.sin_port = htons({port});
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (connect(s, (sockaddr*)&addr, sizeof addr) == 0) {{ printf("connect ok\\n"); escaped = true; }}
    else printf("connect denied %s\\n", strerror(errno));
    fflush(stdout);
    if (fork() == 0) {{
        setsid();
        execl("/bin/sh", "sh", "-c", "sleep 1000; :", {q(marker)}, (char*)nullptr);
        _exit(127);
    }}
    printf("attempted\\n");
    return escaped ? 0 : 1;
}}
"""
        return code, test
    if lang == "java":
        calls = "".join(f"        write({q(p)}, {str(f).lower()});\n" for p, f in writes)
        calls += "".join(f"        read({q(p)});\n" for p in reads)
        test = f"""import java.io.*;
import java.net.*;
import java.nio.file.*;

public class Main {{
    static boolean escaped = false;

    static void write(String p, boolean forbidden) {{
        try {{
            Files.write(Paths.get(p), "x".getBytes());
            System.out.println("write " + p + " ok");
            if (forbidden) escaped = true;
        }} catch (Exception e) {{ System.out.println("write " + p + " denied " + e); }}
    }}

    static void read(String p) {{
        try {{
            System.out.println("read " + p + " ok " + new String(Files.readAllBytes(Paths.get(p))));
            escaped = true;
        }} catch (Exception e) {{ System.out.println("read " + p + " denied " + e); }}
    }}

    public static void main(String[] args) throws Exception {{
{calls}        write(System.getenv("HOME") + "/" + {q(home_name)}, false);
        try (Socket s = new Socket()) {{
            s.connect(new InetSocketAddress("127.0.0.1", {port}), 2000);
            System.out.println("connect ok");
            escaped = true;
        }} catch (Exception e) {{ System.out.println("connect denied " + e); }}
        new ProcessBuilder("setsid", "sh", "-c", "sleep 1000; :", {q(marker)})
            .redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectError(ProcessBuilder.Redirect.DISCARD).start();
        System.out.println("attempted");
        System.exit(escaped ? 0 : 1);
    }}
}}
"""
        return test, ""  # the imports must come first
    if lang == "go":
        pairs = "".join(f"\t\t{{{q(p)}, {str(f).lower()}}},\n" for p, f in writes)
        reads_go = ", ".join(q(p) for p in reads)
        test = f"""package main

import (
\t"fmt"
\t"net"
\t"os"
\t"os/exec"
\t"path/filepath"
\t"syscall"
\t"testing"
\t"time"
)

func TestEscape(t *testing.T) {{
\tescaped := false
\twrites := []struct {{
\t\tpath      string
\t\tforbidden bool
\t}}{{
{pairs}\t\t{{filepath.Join(os.Getenv("HOME"), {q(home_name)}), false}},
\t}}
\tfor _, w := range writes {{
\t\tif err := os.WriteFile(w.path, []byte("x"), 0o644); err != nil {{
\t\t\tfmt.Println("write", w.path, "denied", err)
\t\t}} else {{
\t\t\tfmt.Println("write", w.path, "ok")
\t\t\tescaped = escaped || w.forbidden
\t\t}}
\t}}
\tfor _, p := range []string{{{reads_go}}} {{
\t\tif data, err := os.ReadFile(p); err != nil {{
\t\t\tfmt.Println("read", p, "denied", err)
\t\t}} else {{
\t\t\tfmt.Println("read", p, "ok", string(data))
\t\t\tescaped = true
\t\t}}
\t}}
\tif conn, err := net.DialTimeout("tcp", "127.0.0.1:{port}", 2*time.Second); err != nil {{
\t\tfmt.Println("connect denied", err)
\t}} else {{
\t\tconn.Close()
\t\tfmt.Println("connect ok")
\t\tescaped = true
\t}}
\tcmd := exec.Command("sh", "-c", "sleep 1000; :", {q(marker)})
\tcmd.SysProcAttr = &syscall.SysProcAttr{{Setsid: true}}
\tif err := cmd.Start(); err != nil {{
\t\tfmt.Println("spawn denied", err)
\t}}
\tfmt.Println("attempted")
\tif !escaped {{
\t\tt.Fatal("nothing escaped")
\t}}
}}
"""
        return "package main\n", test
    raise ValueError(lang)


@pytest.fixture
def other_run():
    """A folder shaped like another run's work folder, world-readable (the worst case), holding a secret."""
    folder = Path(tempfile.mkdtemp(prefix="neuro-exec-"))
    secret = f"secret-{uuid.uuid4().hex}"
    (folder / "main.py").write_text(secret)
    folder.chmod(0o755)
    (folder / "main.py").chmod(0o644)
    yield folder / "main.py", secret
    (folder / "main.py").unlink()
    folder.rmdir()


@pytest.fixture
def listener():
    """A TCP listener on the host's 127.0.0.1; yields (port, a function giving the connections it received)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    received = []

    def accept_all():
        sock.setblocking(False)
        while True:
            try:
                conn, peer = sock.accept()
            except (BlockingIOError, OSError):
                return received
            received.append(peer)
            conn.close()

    yield sock.getsockname()[1], accept_all
    sock.close()


@lang_param()
def test_escape_attempts_leave_no_trace(lang, other_run, listener):
    name = f"neuro-escape-{lang}-{uuid.uuid4().hex[:12]}"
    marker = f"neuro-orphan-{uuid.uuid4().hex}"
    secret_file, secret = other_run
    port, connections = listener
    cache_root = languages._cache_root()
    host_paths = [Path("/tmp") / name, Path(tempfile.gettempdir()) / name, Path.home() / name,
                  Path(isolation._HOME) / name, REPO / name, REPO / "cache" / name, cache_root / name,
                  cache_root / "cpp" / name, Path("/") / name]
    writes = [(f"/tmp/{name}", False), (str(Path.home() / name), True), (str(REPO / name), True),
              (str(REPO / "cache" / name), True), (str(cache_root / name), True),
              (str(cache_root / "cpp" / name), True), (f"/{name}", True)]
    readme = (REPO / "README.md").read_text()
    reads = [str(secret_file), str(REPO / "README.md"), "/etc/shadow", "/root/.bash_history"]
    code, test = escape_program(lang, writes, name, reads, port, marker)
    bound = 10 + COMPILE_S[lang]
    start = time.monotonic()
    result = run_program(lang, code, test, timeout=10, compile_timeout=COMPILE_S[lang] or 60)
    elapsed = time.monotonic() - start
    assert "attempted" in result.stdout, result  # it ran every attempt (not a vacuous compile failure)
    assert not result.passed and result.status == "failed", result
    assert elapsed < bound, elapsed
    assert [str(p) for p in host_paths if p.exists()] == []
    assert f"write /tmp/{name} ok" in result.stdout  # its own /tmp works, and is not the host's
    output = result.stdout + result.stderr
    assert secret not in output
    assert readme.splitlines()[0] not in output
    assert connections() == []
    assert alive(marker) == []


@pytest.mark.skipif(not FEATURES["separate_uids"], reason="not root here: runs keep the caller's uid")
def test_work_folder_files_belong_to_an_unprivileged_uid():
    """As root, bwrap's own --uid would map back to root on the host: the uid drop happens inside (setpriv)."""
    name = f"neuro-owner-{uuid.uuid4().hex}"
    code = f"import time\nopen({q(name)}, 'w').write('x')\ntime.sleep(2)\n"
    seen: dict[str, os.stat_result] = {}
    outcome = {}

    def run():
        outcome["result"] = run_program("python", code, "", timeout=10)

    thread = threading.Thread(target=run)
    thread.start()
    end = time.monotonic() + 8
    while not seen and time.monotonic() < end:
        for path in glob.glob(os.path.join(tempfile.gettempdir(), "neuro-exec-*", name)):
            seen[path] = os.stat(path)
        time.sleep(0.05)
    thread.join()
    assert outcome["result"].passed, outcome["result"]
    assert len(seen) == 1, seen
    st = next(iter(seen.values()))
    assert st.st_uid != 0 and runner._RUN_UIDS[0] <= st.st_uid < runner._RUN_UIDS[1], st
    assert [p for p in seen if os.path.exists(p)] == []  # and the work folder is gone after the run


# --------------------------------------------------------------------------- bombs, floods and loops

def fork_bomb(lang: str, marker: str) -> tuple[str, str]:
    """A program that starts processes without end (each carrying `marker`) and says when it is refused."""
    if lang == "python":
        bomb = ("import os, time\nroot, told = os.getpid(), False\nwhile True:\n    try:\n        os.fork()\n"
                "    except OSError:\n        if os.getpid() == root and not told:\n"
                "            print('refused', flush=True)\n            told = True\n        time.sleep(0.05)\n")
        return f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {bomb!r}, {q(marker)}])\n", ""
    if lang == "javascript":
        return f"""const cp = require('child_process');
let told = false;
function refused() {{ if (!told) {{ told = true; console.log('refused'); }} }}
function more() {{
  try {{
    const c = cp.spawn('sh', ['-c', 'sleep 1000; :', {q(marker)}], {{detached: true, stdio: 'ignore'}});
    c.on('error', refused);
  }} catch (e) {{ refused(); }}
  setImmediate(more);
}}
more();
""", ""
    if lang == "cpp":
        return "#include <unistd.h>\n#include <cstdio>\n", f"""int main(int argc, char** argv) {{
    if (argc < 2) {{ execl("/proc/self/exe", "main", {q(marker)}, (char*)nullptr); return 2; }}
    pid_t root = getpid();
    bool told = false;
    while (true) {{
        if (fork() < 0) {{
            if (getpid() == root && !told) {{ printf("refused\\n"); fflush(stdout); told = true; }}
            usleep(50000);
        }}
    }}
}}
"""
    if lang == "java":
        return "class Solution {}\n", f"""public class Main {{
    public static void main(String[] args) throws Exception {{
        boolean told = false;
        while (true) {{
            try {{
                new ProcessBuilder("sh", "-c", "sleep 1000; :", {q(marker)})
                    .redirectOutput(ProcessBuilder.Redirect.DISCARD)
                    .redirectError(ProcessBuilder.Redirect.DISCARD).start();
            }} catch (Throwable e) {{
                if (!told) {{ System.out.println("refused"); System.out.flush(); told = true; }}
                Thread.sleep(50);
            }}
        }}
    }}
}}
"""
    if lang == "go":
        return "package main\n", f"""package main

import (
\t"fmt"
\t"os"
\t"os/exec"
\t"testing"
\t"time"
)

func TestBomb(t *testing.T) {{
\ttold := false
\tfor {{
\t\tcmd := exec.Command(os.Args[0], "-test.run=TestBomb", {q(marker)})
\t\tcmd.Stdout = os.Stdout
\t\tif err := cmd.Start(); err != nil {{
\t\t\tif !told && len(os.Args) < 3 {{
\t\t\t\tfmt.Println("refused")
\t\t\t\ttold = true
\t\t\t}}
\t\t\ttime.Sleep(50 * time.Millisecond)
\t\t}}
\t}}
}}
"""
    raise ValueError(lang)


REFUSED_BY_RUNTIME = re.compile(r"insufficient memory|cannot allocate memory|unable to create (new )?native thread"
                                r"|failed to create new OS thread|resource temporarily unavailable|EAGAIN", re.I)


@lang_param()
def test_fork_bomb_is_contained(lang):
    marker = f"neuro-bomb-{uuid.uuid4().hex}"
    code, test = fork_bomb(lang, marker)
    start = time.monotonic()
    result = run_program(lang, code, test, timeout=4, compile_timeout=COMPILE_S[lang] or 60)
    assert time.monotonic() - start < 4 + COMPILE_S[lang] + 10
    assert result.status in ("timeout", "failed", "memory") and not result.passed, result
    # the per-run process budget held, not just the timeout: the bomb was refused a process, or the budget
    # held so hard its runtime died of it (a JVM that cannot start a thread says "insufficient memory"; under
    # load glibc aborts it with "cannot allocate memory for thread-local data"; Go cannot start an OS thread)
    assert "refused" in result.stdout or REFUSED_BY_RUNTIME.search(result.stdout + result.stderr), result
    assert alive(marker) == []


FLOODS = {
    "python": ("import sys\n", "while True:\n    sys.stdout.write('x' * 65536)\n"),
    # fs.writeSync, not process.stdout.write: node may make a piped stdout non-blocking and queue what the
    # pipe cannot take in its own memory, so under load that flood ends at the memory limit instead
    # (test_a_queued_javascript_flood_is_contained checks that case)
    "javascript": ("const fs = require('fs');\nconst chunk = 'x'.repeat(65536);\n",
                   "while (true) fs.writeSync(1, chunk);\n"),
    "cpp": ("#include <cstdio>\n#include <string>\n",
            "int main() {\n    std::string s(65536, 'x');\n"
            "    while (true) fwrite(s.data(), 1, s.size(), stdout);\n}\n"),
    "java": ("class Solution {}\n", "public class Main {\n    public static void main(String[] a) {\n"
             "        String s = \"x\".repeat(65536);\n        while (true) System.out.print(s);\n    }\n}\n"),
    "go": ("package main\n", "package main\n\nimport (\n\t\"os\"\n\t\"strings\"\n\t\"testing\"\n)\n\n"
           "func TestFlood(t *testing.T) {\n\ts := strings.Repeat(\"x\", 65536)\n\tfor {\n"
           "\t\tos.Stdout.WriteString(s)\n\t}\n}\n"),
}


@lang_param()
def test_output_flood_is_cut_and_killed(lang):
    code, test = FLOODS[lang]
    start = time.monotonic()
    result = run_program(lang, code, test, timeout=10, output_limit=64 * 1024, compile_timeout=COMPILE_S[lang] or 60)
    assert time.monotonic() - start < 10 + COMPILE_S[lang]
    assert result.status == "killed" and result.truncated and not result.passed, result
    assert len(result.stdout) <= 64 * 1024


@pytest.mark.skipif(not AVAILABLE["javascript"], reason="no javascript toolchain here")
def test_a_queued_javascript_flood_is_contained():
    """process.stdout.write in a loop: killed for its output, its memory or its CPU time, never passed."""
    start = time.monotonic()
    result = run_program("javascript", "const chunk = 'x'.repeat(65536);\n",
                         "while (true) process.stdout.write(chunk);\n", timeout=10, output_limit=64 * 1024)
    assert time.monotonic() - start < 10 + 5
    assert result.status in {"killed", "memory", "timeout", "failed"} and not result.passed, result
    assert len(result.stdout) <= 64 * 1024


LOOPS = {
    "python": ("def f():\n    return 1\n", "while f() == 1:\n    pass\n"),
    "javascript": ("const f = () => 1;\n", "while (f() === 1) {}\n"),
    "cpp": ("int f() { return 1; }\n", "int main() {\n    volatile int x = 0;\n    while (f() == 1) x++;\n}\n"),
    "java": ("class Solution {\n    static int f() { return 1; }\n}\n",
             "public class Main {\n    public static void main(String[] a) {\n        long x = 0;\n"
             "        while (Solution.f() == 1) x++;\n        System.out.println(x);\n    }\n}\n"),
    "go": ("package main\n\nfunc F() int { return 1 }\n",
           "package main\n\nimport \"testing\"\n\nfunc TestLoop(t *testing.T) {\n\tx := 0\n\tfor F() == 1 {\n"
           "\t\tx++\n\t}\n\tt.Log(x)\n}\n"),
}


@lang_param()
def test_infinite_loop_in_the_test_times_out(lang):
    code, test = LOOPS[lang]
    start = time.monotonic()
    result = run_program(lang, code, test, timeout=2, compile_timeout=COMPILE_S[lang] or 60)
    assert time.monotonic() - start < 2 + COMPILE_S[lang] + 5
    assert result.status == "timeout" and not result.passed, result


# --------------------------------------------------------------------------- the private /tmp and the work folder

def test_private_tmp_is_capped_and_not_the_hosts():
    name = f"neuro-fill-{uuid.uuid4().hex}"
    code = (f"import os\nn = 0\ntry:\n    for i in range(1000):\n        with open(f'/tmp/{name}-{{i}}', 'wb') as f:\n"
            "            for _ in range(32):\n                f.write(b'x' * (1 << 20))\n                n += 1\n"
            "except OSError as err:\n    print('full at', n, 'MB', err)\n")
    result = run_program("python", code, "", timeout=20)
    assert result.passed, result
    full_at = int(result.stdout.split()[2])
    assert full_at <= isolation._TMPFS_MB, result.stdout
    assert glob.glob(f"/tmp/{name}-*") == [] and glob.glob(os.path.join(tempfile.gettempdir(), f"{name}-*")) == []


def test_filling_the_work_folder_is_killed(monkeypatch):
    monkeypatch.setitem(runner._QUOTA_MB, False, 48)  # the run's quota (the default takes longer to fill)
    code = ("for i in range(1000):\n    with open(f'fill-{i}', 'wb') as f:\n        for _ in range(16):\n"
            "            f.write(b'x' * (1 << 20))\n")
    start = time.monotonic()
    result = run_program("python", code, "", timeout=30)
    assert result.status == "killed" and "to its folder" in result.reason and not result.passed, result
    assert time.monotonic() - start < 30


def test_many_files_in_the_work_folder_are_killed(monkeypatch):
    monkeypatch.setattr(processes, "_QUOTA_ENTRIES", 300)
    code = "import os\nfor i in range(1_000_000):\n    open(f'f{i}', 'w').close()\n"
    result = run_program("python", code, "", timeout=30)
    assert result.status == "killed" and "300 files" in result.reason, result


def test_features_and_warning():
    assert FEATURES["filesystem_isolation"] and FEATURES["network_namespace"] and FEATURES["pid_namespace"]
    json.dumps(FEATURES)
    assert sandbox_warning() is None
