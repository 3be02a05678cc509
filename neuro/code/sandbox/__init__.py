"""Sandboxed execution of (generated) programs against their tests in the five languages.

Every run gets a fresh work folder, a clean environment, closed stdin, a wall-clock timeout
(compilation has its own), resource limits and an output cap, and its whole process tree is killed
when it ends. What the sandbox enforces depends on the host; `sandbox_features()` reports it
(`isolation` names the mechanism) and `sandbox_warning()` gives a line for pages to show when the
strong one is missing:

- `bubblewrap` (the `bwrap` tool, Debian package `bubblewrap`; as root, or where unprivileged user
  namespaces are allowed): each compile and run step starts in a new mount, network, PID, IPC and
  UTS namespace (`--die-with-parent`). Its file system is built from scratch: read-only binds of
  /usr and of what the language's toolchain needs (a few /etc entries, a JDK's /etc config, node's
  global modules, the precompiled C++ header, a read-only Go build cache of the standard packages;
  a toolchain installed outside /usr gets its own folder), a fresh size-capped tmpfs for /tmp and
  for the home directory, and the work folder as the only writable bind. So a program cannot leave
  files outside its work folder, fill the host's /tmp, read the repository, the caches, the home
  directories or other runs' folders, or reach any network (only a loopback of its own). As root,
  bwrap runs without a user namespace (its `--uid` would map back to root on the host) and
  util-linux `setpriv` drops to the step's uid inside, with no capabilities, no supplementary
  groups and no_new_privs.
- `namespaces` (the fallback: util-linux `unshare`, needs root or unprivileged user namespaces):
  new network and PID namespaces only; /tmp and world-readable files remain reachable.
- `none`: only proxy variables that point nowhere (this does not stop a direct socket) and the
  process-group kill (which a setsid() escapes).
- Users: as root, compilers run as `nobody` and each program as a fresh unprivileged uid, so it
  cannot write the repository, read /root, or touch other runs, and RLIMIT_NPROC (per uid, ignored
  for root) is a per-run budget of processes and threads that stops fork bombs. Not as root, the
  budget is the user's current task count plus the same margin (a fork bomb still hits it).
- rlimits (util-linux `prlimit`, else `preexec_fn`): CPU seconds, address space, file size, open
  files, no core dumps. Address space is `memory_mb` for Python and C++. The JVM, V8 and the Go
  runtime reserve several hundred MB of address space they never touch (measured: node needs about
  700 MB to start, a Go test binary about 700 MB, the JVM about Xmx + 500 MB), so for them the heap is
  capped at `memory_mb` by the runtime's own flag (-Xmx, --max-old-space-size, GOMEMLIMIT) and the
  address space at `memory_mb` + 1 GiB. Compilers get 2 GiB. The work folder (on the host's disk) is
  watched: a step whose folder grows past a quota is killed.
- Not enforced: a cgroup memory limit (the page cache and kernel memory are not counted), CPU share.

How a program and its test combine (the demo corpus and HumanEval-X follow this): Python and
JavaScript run `code + test` (console.assert made to throw); C++ compiles `code + test` with a
precompiled set of common headers (HumanEval-X's tests assume some the prompt did not include);
Java compiles `code + test` as Main.java (the test holds `public class Main`); Go puts the code in
main.go (with `package main` if it has no package clause) and the test in main_test.go, reconciles
both files' imports with their use (see `reconcile_go_imports`) and runs `go test` in GOPATH mode.

The functions keep no mutable module state (only cached, read-only host probes), so they can be
called from several threads; compiled artefacts that are safe to share (a precompiled C++ header,
a javac class-data archive, Go's build cache) live in a per-user cache directory, built from our
own trusted sources, never from the programs under test.

Modules, one job each (this package re-exports the public names):

- isolation.py   tools on this host, the bubblewrap command line and its probe, the namespaces fallback,
                 `sandbox_features()` / `sandbox_warning()`
- languages.py   each language's tools, files and compile/run steps, and the shared build caches
- go_imports.py  `reconcile_go_imports`, the Go import rewriter
- processes.py   running one step: limits, timeout, output cap, disk quota, killing the process tree
- runner.py      `run_program` / `run_snippet`: the steps in order, the outcome classified (`STATUSES`)

pass@k, the metric over these outcomes, is `neuro.code.pass_at_k` (re-exported here as before). Names
with a leading underscore are private to this package (shared between its modules, not used outside).
"""

from neuro.code.pass_at_k import pass_at_k, pass_at_k_by_language
from neuro.code.sandbox.go_imports import reconcile_go_imports
from neuro.code.sandbox.isolation import NOBODY, SYSTEM_PATH, sandbox_features, sandbox_warning
from neuro.code.sandbox.languages import toolchains
from neuro.code.sandbox.runner import STATUSES, ExecutionResult, run_program, run_snippet

__all__ = ["NOBODY", "STATUSES", "SYSTEM_PATH", "ExecutionResult", "pass_at_k", "pass_at_k_by_language",
           "reconcile_go_imports", "run_program", "run_snippet", "sandbox_features", "sandbox_warning", "toolchains"]
