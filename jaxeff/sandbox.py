"""Run untrusted programs against tests: compile once, CPU / memory / output limits, verdicts, a disk cache.

The one execution module of jaxeff (TC-Bench's code-test matrix, code-translation evaluation). Languages: C and
C++ (``g++``/``gcc``), Python (this interpreter), Java (``javac``/``java``). Each program is compiled once in
its own temporary directory; each test runs in a fresh process with

* CPU time ``time_s`` (``RLIMIT_CPU``) and the same wall-clock timeout (x2 + 1 s for process start),
* address space ``memory_mb`` (``RLIMIT_AS``; Java gets ``-Xmx`` instead, the JVM reserves far more virtual
  memory than it uses), output files capped (``RLIMIT_FSIZE``) and captured output cut at ``output_bytes``,
* no network where the kernel allows an unprivileged network namespace (``unshare -rn``; checked once, else
  the limits above only), an empty environment but ``PATH``, its own session and process group (killed on
  timeout). Limits are set by ``prlimit`` on the exec'd program when available (no Python code between fork and
  exec, which could deadlock in a multithreaded process), else by a ``preexec_fn``.

Verdicts: ``CE`` (compile error), ``TLE`` (wall timeout or CPU limit signal), ``RE`` (non-zero exit or other
signal; most memory overruns end here, as in the official runner), ``WA``, ``AC``; ``OK`` when a test has no
expected output (the output is returned). Output comparison (TC-Bench's rule): strip every line, drop empty
lines, join with single spaces; if both sides are decimals, |a - b| <= 1e-6 passes.

Results are cached on disk by content hash (program, language options, input, expected output, limits) when
``cache_dir`` is given, so re-running a benchmark re-executes nothing.

Example:
  >>> r = run_tests(Program("print(int(input()) * 2)", "python"), [("21", "42"), ("1", "3")])
  >>> [v.status for v in r]
  ['AC', 'WA']
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
  time_s: float = 2.0
  memory_mb: int = 512
  output_bytes: int = 1 << 20


@dataclasses.dataclass
class Verdict:
  status: str
  output: str = ""
  detail: str = ""
  seconds: float = 0.0


def normalize_output(s: str) -> str:
  """Strip every line, drop empty lines, join with single spaces."""
  return " ".join(line.strip() for line in s.splitlines() if line.strip())


def outputs_match(actual: str, expected: str) -> bool:
  """TC-Bench's comparison: normalised equality, or both decimal and within 1e-6."""
  a, e = normalize_output(actual), normalize_output(expected)
  if _DECIMAL.match(a) and _DECIMAL.match(e):
    return abs(float(a) - float(e)) <= 1e-6
  return a == e


@functools.cache
def _netns() -> list[str]:
  """``unshare -rn`` when unprivileged network namespaces work here, else nothing."""
  exe = shutil.which("unshare")
  if exe is None:
    return []
  try:
    ok = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
  except (OSError, subprocess.SubprocessError):
    ok = False
  return [exe, "-rn"] if ok else []


def _java_class(source: str) -> str:
  """The class to run: the public class, else the first class declared (TransCoder files are not all public)."""
  m = re.search(r"public\s+(?:final\s+)?class\s+(\w+)", source) or re.search(r"\bclass\s+(\w+)", source)
  return m.group(1) if m else "Main"


def compile_program(program: Program, workdir: Path, timeout_s: float = 60.0) -> tuple[list[str] | None, str]:
  """Build ``program`` in ``workdir``: (command to run it, "") or (None, compiler message)."""
  if program.lang == "python":
    src = workdir / "main.py"
    src.write_text(program.source)
    try:
      compile(program.source, str(src), "exec")
    except SyntaxError as e:
      return None, f"SyntaxError: {e}"
    return [sys.executable, "-I", str(src)], ""
  if program.lang == "java":
    name = _java_class(program.source)
    src = workdir / f"{name}.java"
    src.write_text(program.source)
    cmd = ["javac", "-encoding", "UTF-8", "-d", str(workdir), str(src)]
  else:
    src = workdir / ("main.cpp" if program.lang == "cpp" else "main.c")
    src.write_text(program.source)
    opt = "2" if program.opt == "fast" else program.opt
    cc = "g++" if program.lang == "cpp" else "gcc"
    std = program.std if program.lang == "cpp" else program.std.replace("c++", "c")
    cmd = [cc, str(src), "-o", str(workdir / "main"), f"-O{opt}", f"-std={std}", "-lm"]
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=workdir)
  except subprocess.TimeoutExpired:
    return None, "compiler timed out"
  if p.returncode != 0:
    return None, (p.stderr or p.stdout)[-4000:]
  if program.lang == "java":
    return ["java", "-Xss64m", "-Xshare:auto", "-cp", str(workdir), _java_class(program.source)], ""
  return [str(workdir / "main")], ""


def _limit_prefix(limits: Limits, java: bool) -> list[str]:
  """``prlimit`` arguments setting the CPU, address-space and file-size limits on the exec'd program (no Python
  runs between fork and exec: a ``preexec_fn`` in a multithreaded process such as JAX's can deadlock)."""
  exe = shutil.which("prlimit")
  if exe is None:
    return []
  cpu = max(1, int(limits.time_s + 0.999))
  args = [exe, f"--cpu={cpu}:{cpu + 1}", f"--fsize={limits.output_bytes}"]
  if not java:
    args.append(f"--as={limits.memory_mb * 1024 * 1024}")
  return [*args, "--"]


def _run_one(cmd: list[str], stdin: str, limits: Limits, java: bool, cwd: Path) -> Verdict:
  prefix = _limit_prefix(limits, java)

  def preexec():  # only where prlimit is missing
    cpu = max(1, int(limits.time_s + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if not java:
      mem = limits.memory_mb * 1024 * 1024
      resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))

  if java:
    cmd = [cmd[0], f"-Xmx{limits.memory_mb}m", *cmd[1:]]
  env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
  t0 = time.perf_counter()
  proc = subprocess.Popen(
    prefix + _netns() + cmd,
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    preexec_fn=None if prefix else preexec,
    start_new_session=True,
    env=env,
    cwd=cwd,
  )
  try:
    out, err = proc.communicate(stdin.encode(), timeout=2 * limits.time_s + (3.0 if java else 1.0))
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    return Verdict("TLE", detail="wall-clock timeout", seconds=time.perf_counter() - t0)
  dt = time.perf_counter() - t0
  out_s = out[: limits.output_bytes].decode("utf-8", errors="replace")
  rc = proc.returncode
  if rc in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL, 137) and dt >= 0.9 * min(
    limits.time_s, 1.0
  ):
    return Verdict("TLE", out_s, "CPU time limit", dt)
  if rc != 0:
    return Verdict("RE", out_s, err[-2000:].decode("utf-8", errors="replace") or f"exit status {rc}", dt)
  return Verdict("OK", out_s, "", dt)


def _verdict_key(program: Program, stdin: str, expected: str | None, limits: Limits) -> str:
  blob = json.dumps([program.key(), stdin, expected, dataclasses.astuple(limits)])
  return hashlib.sha256(blob.encode()).hexdigest()


def run_tests(
  program: Program,
  tests: Sequence[tuple[str, str | None]],
  limits: Limits = Limits(),
  *,
  cache_dir: str | os.PathLike | None = None,
) -> list[Verdict]:
  """Compile ``program`` once and run every (input, expected output) test; a compile error gives one ``CE``
  verdict per test. Expected ``None``: status ``OK`` with the output."""
  cache = Path(cache_dir) if cache_dir is not None else None
  keys = [_verdict_key(program, i, e, limits) for i, e in tests]
  if cache is not None:
    hits = [cache / k[:2] / f"{k}.json" for k in keys]
    if hits and all(h.is_file() for h in hits):
      return [Verdict(**json.loads(h.read_text())) for h in hits]
  with tempfile.TemporaryDirectory(prefix="jaxeff-sbx-") as tmp:
    work = Path(tmp)
    cmd, msg = compile_program(program, work)
    verdicts = []
    for stdin, expected in tests:
      if cmd is None:
        verdicts.append(Verdict("CE", detail=msg))
        continue
      v = _run_one(cmd, stdin, limits, program.lang == "java", work)
      if v.status == "OK" and expected is not None:
        v.status = "AC" if outputs_match(v.output, expected) else "WA"
      verdicts.append(v)
  if cache is not None:
    for k, v in zip(keys, verdicts):
      d = cache / k[:2]
      d.mkdir(parents=True, exist_ok=True)
      tmpf = d / f"{k}.json.tmp"
      tmpf.write_text(json.dumps(dataclasses.asdict(v)))
      os.replace(tmpf, d / f"{k}.json")
  return verdicts


def run_many(
  programs: Sequence[Program],
  tests: Sequence[Sequence[tuple[str, str | None]]] | Sequence[tuple[str, str | None]],
  limits: Limits = Limits(),
  *,
  workers: int | None = None,
  cache_dir: str | os.PathLike | None = None,
  progress: bool = False,
) -> list[list[Verdict]]:
  """``run_tests`` for many programs in parallel (threads around subprocesses; ``workers`` defaults to the CPU
  count). ``tests`` is one test list shared by all programs or one list per program."""
  if tests and isinstance(tests[0], tuple):
    per = [tests] * len(programs)
  else:
    per = list(tests)
    if len(per) != len(programs):
      raise ValueError(f"{len(programs)} programs but {len(per)} test lists")
  workers = workers or os.cpu_count() or 1
  bar = None
  if progress:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(programs), desc="execute", unit="program")

  def job(i):
    out = run_tests(programs[i], per[i], limits, cache_dir=cache_dir)
    if bar is not None:
      bar.update(1)
    return out

  with ThreadPoolExecutor(max_workers=workers) as ex:
    results = list(ex.map(job, range(len(programs))))
  if bar is not None:
    bar.close()
  return results
