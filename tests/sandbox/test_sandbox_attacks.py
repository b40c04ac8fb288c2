"""Attacks on the sandbox, each contained with its outcome asserted: a fork bomb, a 50 GB allocation, endless
stdout/stderr (the evaluator's memory stays flat), sleeping forever, a detached daemon, network, the user's home,
writes outside the work directory, killing the parent and everything, deleting the work directory, a compiler
fed /dev/zero, and 200 parallel programs with one attacker among them. Python, C++ and Java."""

from __future__ import annotations

import resource
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from jaxeff import sandbox as S
from jaxeff.sandbox import Limits, Program, run_many, run_tests

LIMITS = Limits(time_s=1.0, memory_mb=256, output_bytes=1 << 16, processes=32)
OK_PY = Program("print(int(input()) + 1)", "python")

pytestmark = pytest.mark.skipif(
  S.isolation_problem() is not None, reason=f"no isolation on this machine: {S.isolation_problem()}"
)


def _one(src: str, lang: str = "python", stdin: str = "", limits: Limits = LIMITS):
  (v,) = run_tests(Program(src, lang), [(stdin, None)], limits)
  return v


def _alive(token: str) -> list[str]:
  """Host processes whose command line holds ``token``."""
  out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
  return [line for line in out.splitlines() if token in line and "ps -eo" not in line]


def _still_works():
  (v,) = run_tests(OK_PY, [("41", "42")], LIMITS)
  assert v.status == "AC", v


def test_fork_bombs_end_and_the_machine_stays_responsive():
  py = "import os\nwhile True:\n  try:\n    os.fork()\n  except OSError:\n    pass\n"
  cpp = "#include <unistd.h>\nint main(){ for(;;) fork(); }"
  t0 = time.perf_counter()
  assert _one(py).status in ("RE", "TLE")
  assert _one(cpp, "cpp").status in ("RE", "TLE")
  assert time.perf_counter() - t0 < 30
  _still_works()


def test_huge_allocations_fail_without_touching_the_host():
  py = "x = bytearray(50 * 2**30)\nprint(len(x))"
  cpp = "#include <cstdlib>\n#include <cstring>\nint main(){ size_t n = 50ull<<30; char* p = (char*)malloc(n);\n  if (!p) return 3; memset(p, 1, n); return 0; }"
  assert _one(py).status == "RE"
  assert _one(cpp, "cpp").status == "RE"
  # many children, each under the per-process limit: the tree's memory cgroup (or the process count) stops them
  fan = (
    "import os, time\nfor i in range(8):\n  if os.fork() == 0:\n    x = b'1' * (200 * 2**20)\n"
    "    time.sleep(3)\n    os._exit(0)\nfor i in range(8):\n  os.wait()\nprint('done')"
  )
  v = _one(fan, limits=Limits(time_s=2.0, memory_mb=256, processes=32))
  if S.memory_cgroup_available():
    assert v.status in ("RE", "TLE") or "done" not in v.output, v


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_endless_output_is_cut_and_the_evaluator_stays_flat(stream):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  v = _one(f"import sys\nwhile True:\n  sys.{stream}.write('x' * 65536)\n", limits=Limits(time_s=3.0))
  grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
  assert v.status == "OLE" and "output over" in v.detail
  assert len(v.output) <= Limits().output_bytes
  assert grew_mb < 50


def test_endless_output_in_cpp_and_java():
  cpp = '#include <cstdio>\nint main(){ for(;;) puts("yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"); }'
  java = (
    'public class Main { public static void main(String[] a) { while (true) System.out.println("zzzzzzzzzzzz"); } }'
  )
  assert _one(cpp, "cpp").status == "OLE"
  if shutil.which("javac"):
    assert _one(java, "java", limits=dataclass_replace(LIMITS, time_s=3.0)).status == "OLE"


def dataclass_replace(limits, **kw):
  import dataclasses

  return dataclasses.replace(limits, **kw)


def test_sleeping_forever_is_a_timeout_and_cpu_loops_are_tle_whatever_the_load():
  t0 = time.perf_counter()
  assert _one("import time\ntime.sleep(10**6)").status == "TLE"
  assert time.perf_counter() - t0 < 10
  # six CPU loops at once on this machine's cores: every one is TLE (the verdict never depends on load)
  loops = [Program("while True:\n  pass\n", "python")] * 6
  res = run_many(loops, [("", None)], Limits(time_s=1.0), workers=6)
  assert [v.status for (v,) in res] == ["TLE"] * 6, [v.detail for (v,) in res]


def test_a_detached_daemon_dies_with_the_run():
  token = secrets.token_hex(8)
  src = (
    "import os\nif os.fork() == 0:\n  os.setsid()\n  if os.fork() == 0:\n"
    f"    os.execv('/bin/sh', ['sh', '-c', 'sleep 300; : {token}'])\n  os._exit(0)\nprint('parent done')\n"
  )
  t0 = time.perf_counter()
  v = _one(src)
  assert v.status == "OK" and "parent done" in v.output
  assert time.perf_counter() - t0 < 5  # the daemon did not hold the harness
  time.sleep(0.2)
  assert _alive(token) == []


def test_no_network_at_all():
  srv = socket.socket()
  srv.bind(("127.0.0.1", 0))
  srv.listen(1)
  port = srv.getsockname()[1]
  try:
    src = (
      "import socket\nfor host, port in (('127.0.0.1', PORT), ('1.1.1.1', 80), ('8.8.8.8', 53)):\n"
      "  s = socket.socket()\n  s.settimeout(2)\n  try:\n    s.connect((host, port))\n    print('connected', host)\n"
      "  except OSError:\n    print('blocked', host)\n"
    ).replace("PORT", str(port))
    v = _one(src, limits=dataclass_replace(LIMITS, time_s=3.0))
    assert v.status == "OK" and "connected" not in v.output and v.output.count("blocked") == 3, v
  finally:
    srv.close()


def test_home_project_and_system_files_are_invisible():
  secret = Path.home() / f".jaxeff-sbx-secret-{secrets.token_hex(4)}"
  secret.write_text("top secret")
  secret.chmod(0o600)
  try:
    src = (
      f"import os\nfor p in ({str(secret)!r}, '/etc/passwd', {str(Path(__file__))!r}, os.path.expanduser('~/.bashrc')):\n"
      "  try:\n    open(p).read()\n    print('READ', p)\n  except OSError:\n    print('denied', p)\n"
      f"for d in ({str(Path(__file__).parents[2])!r}, '/root', '/home'):\n  try:\n    print('LISTED', d, sorted(os.listdir(d)))\n"
      "  except OSError:\n    print('denied', d)\n"
    )
    v = _one(src)
    assert v.status == "OK" and "READ" not in v.output, v.output
    # the interpreter's own prefix may be bound read-only (a venv inside the project); nothing else of it is there
    for name in ("'tests'", "'jaxeff'", "'README.md'", "'pyproject.toml'", "secret"):
      assert name not in v.output.split("denied /etc/passwd")[-1], v.output
  finally:
    secret.unlink()


def test_writes_outside_the_work_directory_do_not_land():
  name = f"escape_{secrets.token_hex(6)}.txt"
  targets = [Path("/tmp") / name, Path.home() / name, Path(__file__).parent / name]
  src = "import os\n" + "".join(
    f"try:\n  open({str(t)!r}, 'w').write('x')\n  print('wrote')\nexcept OSError:\n  print('denied')\n"
    for t in targets
  )
  src += "open('inside.txt', 'w').write('fine')\nprint(open('inside.txt').read())\n"
  v = _one(src)
  assert v.status == "OK" and "fine" in v.output
  for t in targets:
    assert not t.exists(), t


def test_killing_the_parent_or_everything_leaves_the_evaluator_alive():
  sentinel = subprocess.Popen(["sleep", "60"])
  try:
    for src in ("import os\nos.kill(os.getppid(), 9)\nprint('after')", "import os\nos.kill(-1, 9)\nprint('after')"):
      v = _one(src)
      assert v.status in ("OK", "RE"), v
    assert sentinel.poll() is None  # a process of the same user outside the sandbox was not signalled
  finally:
    sentinel.kill()
    sentinel.wait()
  _still_works()


def test_a_program_deleting_its_work_directory_does_not_break_the_next_test():
  src = "import os, shutil\nprint(int(input()) + 1)\nshutil.rmtree(os.getcwd(), ignore_errors=True)\n"
  vs = run_tests(Program(src, "python"), [("1", "2"), ("2", "3"), ("3", "4")], LIMITS)
  assert [v.status for v in vs] == ["AC", "AC", "AC"], [v.detail for v in vs]


def test_the_compiler_is_limited_too():
  t0 = time.perf_counter()
  (v,) = run_tests(
    Program('#include "/dev/zero"\nint main(){}', "cpp"),
    [("", None)],
    Limits(compile_time_s=10, compile_memory_mb=512),
  )
  assert v.status == "CE" and time.perf_counter() - t0 < 25


def test_two_hundred_programs_in_parallel_with_one_attacker():
  progs = [OK_PY] * 200
  progs[137] = Program("import os\nwhile True:\n  try:\n    os.fork()\n  except OSError:\n    pass\n", "python")
  tests = [[(str(i), str(i + 1))] for i in range(200)]
  res = run_many(progs, tests, LIMITS, workers=8)
  statuses = [vs[0].status for vs in res]
  assert statuses[137] in ("RE", "TLE")
  assert statuses[:137] + statuses[138:] == ["AC"] * 199, [s for s in statuses if s != "AC"]


def test_verdict_cache_is_checked_and_never_holds_infrastructure_failures(tmp_path, monkeypatch):
  prog = Program("print(input()[::-1])", "python")
  (v,) = run_tests(prog, [("abc", "cba")], LIMITS, cache_dir=tmp_path)
  assert v.status == "AC"
  (entry,) = list(tmp_path.rglob("*.json"))
  forged = entry.read_text().replace('"AC"', '"WA"')
  entry.write_text(forged)  # a tampered entry (checksum no longer matches) is ignored and recomputed
  (v,) = run_tests(prog, [("abc", "cba")], LIMITS, cache_dir=tmp_path)
  assert v.status == "AC"

  def broken(*a, **k):
    raise S._InfraError("bwrap: simulated failure")

  monkeypatch.setattr(S, "_run_one", broken)
  other = Program("print(input())", "python")
  (v,) = run_tests(other, [("x", "x")], LIMITS, cache_dir=tmp_path)
  assert v.status == "EXE"
  monkeypatch.undo()
  (v,) = run_tests(other, [("x", "x")], LIMITS, cache_dir=tmp_path)
  assert v.status == "AC"  # the failure was not cached


def test_missing_bubblewrap_refuses_unless_explicitly_unsafe(monkeypatch, capsys):
  real_which = shutil.which
  monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real_which(name, *a, **k))
  S.isolation_problem.cache_clear()
  try:
    with pytest.raises(S.SandboxUnavailable, match="apt-get install bubblewrap"):
      run_tests(OK_PY, [("1", "2")], LIMITS)
    (v,) = run_tests(OK_PY, [("1", "2")], LIMITS, unsafe_no_isolation=True)
    assert v.status == "AC"
    assert "WITHOUT isolation" in capsys.readouterr().err
  finally:
    S.isolation_problem.cache_clear()


def test_tcbench_preset_is_the_official_runner():
  lim = Limits.tcbench(2500, 256)
  assert (lim.time_s, lim.wall(False), lim.memory_mb) == (5.0, 5.0, 1280)
  with pytest.raises(ValueError, match="positive"):
    Limits(time_s=0)


@pytest.mark.skipif(shutil.which("javac") is None, reason="javac is not installed")
def test_java_thread_bomb_and_huge_allocation():
  bomb = (
    "public class Main { public static void main(String[] a) { while (true) { new Thread(() -> { try { "
    "Thread.sleep(100000); } catch (Exception e) {} }).start(); } } }"
  )
  alloc = "public class Main { public static void main(String[] a) { long[] x = new long[1 << 30]; x[7] = 1; } }"
  lim = dataclass_replace(LIMITS, time_s=3.0)
  assert _one(bomb, "java", limits=lim).status in ("RE", "TLE")
  assert _one(alloc, "java", limits=lim).status == "RE"
  _still_works()


def test_an_evaluator_in_a_venv_under_tmp_still_runs_python():
  """CI installs into a venv under /tmp; the sandbox's private /tmp must not hide that interpreter (or its
  site-packages) from the programs it runs."""
  import site
  import sys

  venv = Path(tempfile.mkdtemp(prefix="jaxeff-venv-", dir="/tmp"))
  try:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv / "v")], check=True)
    (pth,) = (venv / "v").glob("lib/python*/site-packages")
    (pth / "outer.pth").write_text("\n".join([*site.getsitepackages(), str(Path(__file__).parents[2])]) + "\n")
    src = "import numpy, sys\nprint(int(input()) + 1, sys.prefix)"
    code = (
      "from jaxeff.sandbox import Limits, Program, run_tests\n"
      f"(v,) = run_tests(Program({src!r}, 'python'), [('41\\n', None)], Limits(time_s=5.0))\n"
      "print(v.status, v.output.strip())"
    )
    out = subprocess.run([str(venv / "v" / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    status, answer, prefix = out.stdout.split()
    assert (status, answer, prefix) == ("OK", "42", str(venv / "v"))
  finally:
    shutil.rmtree(venv, ignore_errors=True)
