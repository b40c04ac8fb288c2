"""Run untrusted programs against tests inside an isolated sandbox: compile once, limits, verdicts, a cache.

The one execution module of jaxeff (TC-Bench's code-test matrix, code-translation evaluation). Languages: C and
C++ (``g++``/``gcc``), Python (this interpreter), Java (``javac``/``java``). Every untrusted step, the
compiler as well as each test run, executes inside bubblewrap (``bwrap``, the sandbox of Flatpak; the same
containment as IOI's ``isolate`` and Google's ``nsjail``):

* new user, PID, network, IPC, UTS (and cgroup) namespaces; ``--die-with-parent``, ``--new-session``; the program
  sees no PID outside its namespace, so it can signal neither the evaluator nor anything else; ending the
  namespace's first process ends every descendant (detached daemons included) at the end of each test and on
  timeout;
* the filesystem read-only (``/usr``, the interpreter's prefix, the few ``/etc`` files compilers and the JVM
  need) except the program's own fresh work directory (``/sandbox``) and a private ``/tmp``; no home directory,
  no project, no verdict cache, no ``/etc/passwd``; an empty environment (``PATH``, ``LANG``, ``HOME=/sandbox``);
* limits (``prlimit`` inside the sandbox, inherited by every child): CPU seconds (``RLIMIT_CPU``), address
  space per process (``RLIMIT_AS``, also for the JVM, with its reservation allowance ``JAVA_AS_EXTRA_MB``), file
  size; for the whole process tree a pids cgroup (processes + threads) and a memory cgroup (resident memory,
  tmpfs files included) where this machine lets the evaluator create them (required when it runs as root:
  ``RLIMIT_NPROC`` does not bind uid 0); otherwise (non-root) ``RLIMIT_NPROC`` relative to the evaluator's own
  process count, and the tree's memory is at most ``processes x memory_mb``;
* output read as a stream with a hard cap: past ``output_bytes`` (stdout or stderr) the program is killed
  and the verdict is ``OLE``; the evaluator keeps at most the cap, whatever the program prints.

Where ``bwrap`` is missing or user namespaces are disabled, running untrusted code raises
``SandboxUnavailable`` (with how to install it) unless the caller passes ``unsafe_no_isolation=True``
(``--unsafe-no-isolation`` on the CLI), which runs with the limits only and warns on every run.

Verdicts: ``CE`` (compile error), ``TLE`` (wall timeout, or the CPU limit: SIGXCPU, or SIGKILL after the
CPU seconds were used; decided on CPU time, never on wall time, so a verdict does not depend on load),
``OLE`` (output cap), ``RE`` (non-zero exit or another signal; most memory overruns end here, as in the
official runner), ``WA``, ``AC``; ``OK`` when a test has no expected output (the output is returned);
``EXE`` when the sandbox itself failed (never cached). Output comparison (TC-Bench's rule): strip every
line, drop empty lines, join with single spaces; if both sides are decimals, |a - b| <= 1e-6 passes.

Results are cached on disk by content hash (program, language options, input, expected output, limits) when
``cache_dir`` is given (a folder no program can see); each entry carries a checksum of its key and verdict and
is ignored (rerun) when it does not match.

Example:
  >>> r = run_tests(Program("print(int(input()) * 2)", "python"), [("21", "42"), ("1", "3")])
  >>> [v.status for v in r]
  ['AC', 'WA']
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jaxeff.sandbox.isolation import (  # noqa: F401  (re-exported: the public names and the tests' hooks)
  _WORK,
  INSTALL_HINT,
  JAVA_AS_EXTRA_MB,
  JAVA_RSS_EXTRA_MB,
  SandboxUnavailable,
  _Cgroup,
  _cgroup_base,
  _in_sandbox,
  _InfraError,
  _launch,
  _Slot,
  isolation_problem,
  memory_cgroup_available,
  require_isolation,
)

LANGS = ("cpp", "c", "python", "java")
_DECIMAL = re.compile(r"^-?\d+\.\d+$")


@dataclasses.dataclass(frozen=True)
class Program:
  """Source code and how to build it: ``lang`` in cpp / c / python / java; ``std`` and ``opt`` for C/C++
  (``opt="fast"`` means -O2, as in TC-Bench's runner)."""

  source: str
  lang: str = "cpp"
  std: str = "c++17"
  opt: str = "2"

  def __post_init__(self):
    if self.lang not in LANGS:
      raise ValueError(f"unsupported language {self.lang!r}; choose one of {LANGS}")

  def key(self) -> str:
    return hashlib.sha256(json.dumps([self.source, self.lang, self.std, self.opt]).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-test limits. Defaults (stricter than TC-Bench's runner): ``time_s`` CPU seconds, wall clock
  ``2 time_s + 1`` s (+3 s for the JVM), ``memory_mb`` address space per process, ``output_bytes`` per stream,
  ``processes`` processes + threads in the sandbox; the compiler gets ``compile_time_s`` and ``compile_memory_mb``.
  ``Limits.tcbench(ms, mb)`` is the official runner's setting.

  Example:
    >>> Limits.tcbench(2000, 256).time_s
    5.0
  """

  time_s: float = 2.0
  memory_mb: int = 512
  output_bytes: int = 1 << 20
  processes: int = 64
  wall_s: float | None = None
  compile_time_s: float = 60.0
  compile_memory_mb: int = 4096

  def __post_init__(self):
    bad = [
      f"{k}={getattr(self, k)!r}"
      for k in ("time_s", "memory_mb", "output_bytes", "processes")
      if getattr(self, k) <= 0
    ]
    if self.wall_s is not None and self.wall_s <= 0:
      bad.append(f"wall_s={self.wall_s!r}")
    if bad:
      raise ValueError(f"limits must be positive: {', '.join(bad)}")

  @classmethod
  def tcbench(cls, time_limit_ms: int, memory_limit_mb: int, **kw) -> Limits:
    """TC-Bench's official runner: ``ulimit -t T`` and a wall timeout of ``T = ms // 1000 + 3`` seconds,
    ``ulimit -v`` of 5x the problem's memory limit."""
    t = float(int(time_limit_ms) // 1000 + 3)
    return cls(time_s=t, wall_s=t, memory_mb=int(memory_limit_mb) * 5, **kw)

  def wall(self, java: bool) -> float:
    return self.wall_s if self.wall_s is not None else 2 * self.time_s + (3.0 if java else 1.0)


@dataclasses.dataclass
class Verdict:
  """One test's outcome: ``status`` (see the module docstring), the program's ``output`` (cut at the cap), a
  ``detail`` (stderr tail, compiler message, the limit hit), the wall ``seconds`` and the ``stderr`` tail of a run
  that exited normally (TC-Bench's test validation counts a non-empty stderr as RE)."""

  status: str
  output: str = ""
  detail: str = ""
  seconds: float = 0.0
  stderr: str = ""


def normalize_output(s: str) -> str:
  """Strip every line, drop empty lines, join with single spaces."""
  return " ".join(line.strip() for line in s.splitlines() if line.strip())


def outputs_match(actual: str, expected: str) -> bool:
  """TC-Bench's comparison: normalised equality, or both decimal and within 1e-6."""
  a, e = normalize_output(actual), normalize_output(expected)
  if _DECIMAL.match(a) and _DECIMAL.match(e):
    return abs(float(a) - float(e)) <= 1e-6
  return a == e


def _java_class(source: str) -> str:
  """The class to run: the public class, else the first class declared (TransCoder files are not all public)."""
  m = re.search(r"public\s+(?:final\s+)?class\s+(\w+)", source) or re.search(r"\bclass\s+(\w+)", source)
  return m.group(1) if m else "Main"


_JAVA_FLAGS = ["-XX:+UseSerialGC", "-XX:ActiveProcessorCount=1", "-XX:TieredStopAtLevel=1", "-Xshare:auto"]


def _python() -> str:
  return os.path.realpath(sys.executable) if sys.prefix == sys.base_prefix else sys.executable


def _compile_step(slot: _Slot, cmd: list[str], limits: Limits, as_mb: int | None):
  """A compiler run in the slot's sandbox under the compile limits (1 MiB of output kept)."""
  e, _ = _launch(
    slot,
    cmd,
    cpu_s=limits.compile_time_s,
    as_mb=as_mb,
    rss_mb=limits.compile_memory_mb,
    processes=max(limits.processes, 64),
    output_bytes=1 << 20,
    wall_s=2 * limits.compile_time_s,
  )
  return e


def compile_program(program: Program, slot: _Slot, limits: Limits) -> tuple[list[str] | None, str]:
  """Build ``program`` in the slot's work directory, inside the sandbox with the compile limits:
  (command to run it, "") or (None, compiler message)."""
  work = slot.work
  _, wd = _in_sandbox(slot, slot.unsafe)
  if program.lang == "python":
    (work / "main.py").write_text(program.source)
    try:
      compile(program.source, "main.py", "exec")  # parsing only, in the evaluator: nothing runs
    except (SyntaxError, ValueError) as e:
      return None, f"SyntaxError: {e}"
    return [_python(), "-I", f"{wd}/main.py"], ""
  if program.lang == "java":
    name = _java_class(program.source)
    (work / f"{name}.java").write_text(program.source)
    cmd = [
      "javac",
      "-J-XX:+UseSerialGC",
      "-J-XX:TieredStopAtLevel=1",
      "-encoding",
      "UTF-8",
      "-d",
      wd,
      f"{wd}/{name}.java",
    ]
    mem = None  # javac: a JVM (address space checked by -J-Xmx)
    cmd.insert(1, f"-J-Xmx{min(limits.compile_memory_mb, 1024)}m")
  else:
    src = "main.cpp" if program.lang == "cpp" else "main.c"
    (work / src).write_text(program.source)
    opt = "2" if program.opt == "fast" else program.opt
    cc = "g++" if program.lang == "cpp" else "gcc"
    std = program.std if program.lang == "cpp" else program.std.replace("c++", "c")
    cmd = [cc, f"{wd}/{src}", "-o", f"{wd}/main", f"-O{opt}", f"-std={std}", "-lm"]
    mem = limits.compile_memory_mb
  e = _compile_step(slot, cmd, limits, mem)
  if e.killed or e.rc != 0:
    why = {"wall": "compiler timed out", "output": "compiler output over 1 MiB"}.get(e.killed, "")
    return None, why or (e.err or e.out).decode(errors="replace")[-4000:] or f"compiler exit status {e.rc}"
  if program.lang == "java":
    return ["java", "-Xss64m", *_JAVA_FLAGS, "-cp", wd, _java_class(program.source)], ""
  return [f"{wd}/main"], ""


def _run_one(cmd: list[str], stdin: str, limits: Limits, java: bool, slot: _Slot) -> Verdict:
  if java:
    cmd = [cmd[0], f"-Xmx{limits.memory_mb}m", *cmd[1:]]
  e, oom = _launch(
    slot,
    cmd,
    cpu_s=limits.time_s,
    as_mb=limits.memory_mb + (JAVA_AS_EXTRA_MB if java else 0),
    rss_mb=limits.memory_mb + (JAVA_RSS_EXTRA_MB if java else 0),
    processes=limits.processes,
    output_bytes=limits.output_bytes,
    wall_s=limits.wall(java),
    stdin=stdin,
  )
  out = e.out.decode("utf-8", errors="replace")
  err = e.err.decode("utf-8", errors="replace")[-2000:]
  if e.killed == "output":
    return Verdict("OLE", out, f"output over {limits.output_bytes} bytes", e.seconds)
  if oom:  # a process of the tree was killed at the tree's memory limit, whatever the exit status
    return Verdict("RE", out, "memory limit of the process tree (cgroup)", e.seconds)
  if e.killed == "wall":
    return Verdict("TLE", out, "wall-clock timeout", e.seconds)
  rc = e.rc
  cpu_hit = e.cpu_s >= 0.95 * max(1, int(limits.time_s + 0.999))
  if rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU) or (rc in (-signal.SIGKILL, 128 + signal.SIGKILL) and cpu_hit):
    return Verdict("TLE", out, "CPU time limit", e.seconds)
  if rc != 0:
    return Verdict("RE", out, err or f"exit status {rc}", e.seconds)
  return Verdict("OK", out, "", e.seconds, err)


def syntax_ok(source: str, lang: str, limits: Limits = Limits(), *, unsafe_no_isolation: bool = False) -> bool:
  """Whether ``source`` compiles (C/C++: ``-fsyntax-only``; Java: ``javac``), checked inside the sandbox with the
  compile limits (a compiler fed untrusted code is attack surface too: ``#include "/dev/zero"``).

  Example:
    >>> syntax_ok("int main(){}", "cpp")  # doctest: +SKIP
    True
  """
  if lang not in ("cpp", "c", "java"):
    raise ValueError(f"syntax_ok checks cpp / c / java, got {lang!r}")
  require_isolation(unsafe_no_isolation)
  slot = _Slot(unsafe_no_isolation)
  try:
    _, wd = _in_sandbox(slot, slot.unsafe)
    if lang == "java":
      name = _java_class(source)
      (slot.build / f"{name}.java").write_text(source)
      cmd = ["javac", "-J-Xmx512m", "-J-XX:+UseSerialGC", "-d", wd, f"{wd}/{name}.java"]
      as_mb = None
    else:
      src = "s.cpp" if lang == "cpp" else "s.c"
      (slot.build / src).write_text(source)
      cmd = [
        "g++" if lang == "cpp" else "gcc",
        "-fsyntax-only",
        "-std=c++17" if lang == "cpp" else "-std=c11",
        f"{wd}/{src}",
      ]
      as_mb = limits.compile_memory_mb
    e = _compile_step(slot, cmd, limits, as_mb)
    return not e.killed and e.rc == 0
  finally:
    slot.close()


# ------------------------------------------------------------------------------------------------ cache
def _verdict_key(program: Program, stdin: str, expected: str | None, limits: Limits) -> str:
  blob = json.dumps([program.key(), stdin, expected, dataclasses.astuple(limits)])
  return hashlib.sha256(blob.encode()).hexdigest()


def _checksum(key: str, verdict: dict) -> str:
  return hashlib.sha256(json.dumps([key, verdict], sort_keys=True).encode()).hexdigest()


def _cache_read(path: Path, key: str) -> Verdict | None:
  """The cached verdict if the entry is intact and belongs to ``key``; None (rerun) otherwise."""
  try:
    entry = json.loads(path.read_text())
    if entry.get("key") != key or entry.get("sha256") != _checksum(key, entry["verdict"]):
      return None
    return Verdict(**entry["verdict"])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _cache_write(path: Path, key: str, v: Verdict) -> None:
  d = dataclasses.asdict(v)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
  tmp.write_text(json.dumps({"key": key, "verdict": d, "sha256": _checksum(key, d)}))
  os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ API
def run_tests(
  program: Program,
  tests: Sequence[tuple[str, str | None]],
  limits: Limits = Limits(),
  *,
  cache_dir: str | os.PathLike | None = None,
  unsafe_no_isolation: bool = False,
) -> list[Verdict]:
  """Compile ``program`` once and run every (input, expected output) test, each in a fresh sandbox; a compile
  error gives one ``CE`` verdict per test, a sandbox failure ``EXE`` (not cached). Expected ``None``: status
  ``OK`` with the output. Raises ``SandboxUnavailable`` (before any work) where isolation is impossible, unless
  ``unsafe_no_isolation``."""
  require_isolation(unsafe_no_isolation)
  cache = Path(cache_dir) if cache_dir is not None else None
  keys = [_verdict_key(program, i, e, limits) for i, e in tests]
  if cache is not None:
    hits = [_cache_read(cache / k[:2] / f"{k}.json", k) for k in keys]
    if hits and all(h is not None for h in hits):
      return hits
  slot = _Slot(unsafe_no_isolation)
  verdicts = []
  try:
    try:
      cmd, msg = compile_program(program, slot, limits)
    except _InfraError as e:
      return [Verdict("EXE", detail=f"sandbox failure: {e}") for _ in tests]
    for stdin, expected in tests:
      if cmd is None:
        verdicts.append(Verdict("CE", detail=msg))
        continue
      try:
        slot.fresh()
        v = _run_one(cmd, stdin, limits, program.lang == "java", slot)
      except _InfraError as e:
        v = Verdict("EXE", detail=f"sandbox failure: {e}")
      if v.status == "OK" and expected is not None:
        v.status = "AC" if outputs_match(v.output, expected) else "WA"
      verdicts.append(v)
  finally:
    slot.close()
  if cache is not None:
    for k, v in zip(keys, verdicts):
      if v.status != "EXE":
        _cache_write(cache / k[:2] / f"{k}.json", k, v)
  return verdicts


def run_many(
  programs: Sequence[Program],
  tests: Sequence[Sequence[tuple[str, str | None]]] | Sequence[tuple[str, str | None]],
  limits: Limits = Limits(),
  *,
  workers: int | None = None,
  cache_dir: str | os.PathLike | None = None,
  progress: bool = False,
  unsafe_no_isolation: bool = False,
) -> list[list[Verdict]]:
  """``run_tests`` for many programs in parallel (threads around sandboxes; ``workers`` defaults to the CPU
  count; each run has its own sandbox, cgroup and work directory). ``tests`` is one test list shared by all programs or
  one list per program."""
  if tests and isinstance(tests[0], tuple):
    per = [tests] * len(programs)
  else:
    per = list(tests)
    if len(per) != len(programs):
      raise ValueError(f"{len(programs)} programs but {len(per)} test lists")
  require_isolation(unsafe_no_isolation)
  workers = workers or os.cpu_count() or 1
  bar = None
  if progress:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(programs), desc="execute", unit="program")

  def job(i):
    out = run_tests(programs[i], per[i], limits, cache_dir=cache_dir, unsafe_no_isolation=unsafe_no_isolation)
    if bar is not None:
      bar.update(1)
    return out

  with ThreadPoolExecutor(max_workers=workers) as ex:
    results = list(ex.map(job, range(len(programs))))
  if bar is not None:
    bar.close()
  return results
