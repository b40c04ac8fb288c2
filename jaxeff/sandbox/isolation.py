"""The isolation layer of ``jaxeff.sandbox``: bubblewrap namespaces, the run's cgroups, ``prlimit`` limits, the
streamed execution with its output cap and deadline, and the availability check. ``jaxeff.sandbox`` builds
programs and verdicts on top of ``_launch``."""

from __future__ import annotations

import dataclasses
import functools
import glob
import itertools
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# ------------------------------------------------------------------------------------------------ isolation
class SandboxUnavailable(RuntimeError):
  """bubblewrap is missing or cannot create namespaces here: untrusted code is not run."""


UNAVAILABLE_MESSAGE = "cannot run untrusted code in isolation"  # how SandboxUnavailable's message starts
INSTALL_HINT = (
  "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`) and allow "
  "unprivileged user namespaces (`sysctl kernel.unprivileged_userns_clone=1` where that knob exists), or pass "
  "unsafe_no_isolation=True (--unsafe-no-isolation) to run with resource limits only"
)
JAVA_AS_EXTRA_MB = (
  3072  # the JVM reserves ~2.5-3 GB of address space beyond its heap (thread stacks of -Xss64m, code cache)
)
JAVA_RSS_EXTRA_MB = 512  # resident memory of the JVM itself, on top of the heap, in the tree's cgroup limit
_INNER_UID = 1000
_WORK = "/sandbox"  # the program's work directory as it sees it (not /work: that may hold the interpreter)
_SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_run_ids = itertools.count()


@functools.cache
def _host_paths() -> tuple[str, ...]:
  """bwrap arguments that expose the host's toolchains read-only: /usr, the merged-/usr symlinks (or the real
  directories), this interpreter's prefixes (a venv and its base), the /etc files compilers and the JVM read.
  Computed once per process (it scans ``sys.path`` and the file system; every run needs it)."""
  args = ["--ro-bind", "/usr", "/usr"]
  for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
    if os.path.islink(d):
      args += ["--symlink", os.readlink(d), d]
    elif os.path.isdir(d):
      args += ["--ro-bind", d, d]
  # The interpreter prefixes and any site-packages on the evaluator's path (numpy for TransCoder's Python tests),
  # never a project checkout that an editable install puts on sys.path.
  roots = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
  roots |= {os.path.realpath(e) for e in sys.path if os.path.basename(e) in ("site-packages", "dist-packages")}
  for root in sorted(r for r in roots if os.path.isdir(r) and not r.startswith("/usr/")):
    if not any(root.startswith(other + "/") for other in roots if other != root):
      args += ["--ro-bind", root, root]
  etc = ["/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"]
  etc += sorted(glob.glob("/etc/java*"))
  for e in etc:
    args += ["--ro-bind-try", e, e]
  return tuple(args)


def _bwrap(work: Path, status_fd: int | None = None) -> list[str]:
  """The command prefix that runs a program inside the sandbox with ``work`` as its writable ``/sandbox``;
  ``status_fd``: where bwrap reports the child's start and exit as JSON (``--json-status-fd``)."""
  return [
    shutil.which("bwrap") or "bwrap",
    *([] if status_fd is None else ["--json-status-fd", str(status_fd)]),
    "--unshare-user",
    "--uid",
    str(_INNER_UID),
    "--gid",
    str(_INNER_UID),
    "--unshare-pid",
    "--unshare-net",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--die-with-parent",
    "--new-session",
    "--clearenv",
    "--setenv",
    "PATH",
    _SANDBOX_PATH,
    "--setenv",
    "LANG",
    "C.UTF-8",
    "--setenv",
    "HOME",
    _WORK,
    # bwrap applies these in order: the private /tmp first, so that an interpreter prefix under /tmp (a CI venv)
    # is bound on top of it rather than hidden by it.
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
    *_host_paths(),
    "--bind",
    str(work),
    _WORK,
    "--chdir",
    _WORK,
    "--",
  ]


# ------------------------------------------------------------------------------------------------ cgroups
@functools.cache
def _cgroup_base(ctrl: str) -> Path | None:
  """This process's own cgroup directory for controller ``ctrl`` (v1 hierarchy, or the v2 unified one where the
  controller is enabled for children), if this process may create groups in it; else None."""
  try:
    lines = Path("/proc/self/cgroup").read_text().splitlines()
  except OSError:
    return None
  for line in lines:
    _, ctrls, path = line.split(":", 2)
    if ctrl in ctrls.split(","):  # v1
      for mount in (Path("/sys/fs/cgroup") / ctrl, Path("/sys/fs/cgroup") / ctrls):
        d = mount / path.lstrip("/")
        if (d / "cgroup.procs").is_file() and os.access(d, os.W_OK):
          return d
  for line in lines:
    if line.startswith("0::"):  # v2
      d = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
      try:
        enabled = (d / "cgroup.subtree_control").read_text().split()
      except OSError:
        return None
      if ctrl in enabled and os.access(d, os.W_OK):
        return d
  return None


class _Cgroup:
  """The pids (and memory) cgroups of one sandboxed run: a process/thread count and a resident-memory limit
  that hold for the whole process tree, root included. ``procs`` are the files a process joins them through."""

  def __init__(self, pids_max: int, memory_mb: int | None):
    name = f"jaxeff-{os.getpid()}-{next(_run_ids)}"
    self.dirs: list[Path] = []
    try:
      d = self._make("pids", name)
      (d / "pids.max").write_text(str(pids_max))
      if memory_mb is not None and _cgroup_base("memory") is not None:
        d = self._make("memory", name)
        limit = str(memory_mb * 1024 * 1024)
        for f in ("memory.limit_in_bytes", "memory.max"):
          if (d / f).is_file():
            (d / f).write_text(limit)
        for f in ("memory.memsw.limit_in_bytes", "memory.swap.max"):
          try:
            (d / f).write_text(limit if f.endswith("bytes") else "0")
          except OSError:
            pass  # no swap accounting here
    except OSError:
      self.close()
      raise

  def _make(self, ctrl: str, name: str) -> Path:
    base = _cgroup_base(ctrl)
    if base is None:
      raise OSError(f"no writable {ctrl} cgroup")
    d = base / name
    d.mkdir()
    self.dirs.append(d)
    return d

  @property
  def procs(self) -> list[str]:
    return [str(d / "cgroup.procs") for d in self.dirs]

  def memory_exceeded(self) -> bool:
    """Whether the kernel killed a process of the tree at its memory limit (v1 ``memory.oom_control`` or v2
    ``memory.events``: ``oom_kill > 0``). Reaching the limit alone (v1 ``failcnt``) is not a kill: page cache
    is reclaimed there and the program goes on."""
    for d in self.dirs:
      for f in ("memory.oom_control", "memory.events"):
        try:
          lines = (d / f).read_text().splitlines()
        except OSError:
          continue
        if any(line.split()[:1] == ["oom_kill"] and int(line.split()[1]) > 0 for line in lines):
          return True
    return False

  def close(self) -> None:
    """Kill whatever is left in the groups and remove them."""
    for d in reversed(self.dirs):
      # The namespace's processes are still being reaped for a moment after bwrap exits: retry the removal
      # with a short, growing pause (a fixed 20 ms pause cost more than the whole run of a small program).
      for pause in (0.0005 * 1.5**i for i in range(40)):
        try:
          pids = [int(x) for x in (d / "cgroup.procs").read_text().split()]
        except OSError:
          pids = []
        for pid in pids:
          try:
            os.kill(pid, signal.SIGKILL)
          except ProcessLookupError:
            pass
        try:
          d.rmdir()
          break
        except OSError:
          time.sleep(min(pause, 0.05))
    self.dirs = []


# ------------------------------------------------------------------------------------------------ checks
def memory_cgroup_available() -> bool:
  """Whether each run's process tree gets its own memory cgroup here (else only per-process RLIMIT_AS binds)."""
  return _cgroup_base("memory") is not None


@functools.cache
def isolation_problem() -> str | None:
  """None when the sandbox works on this machine, else why not (checked once by running ``true`` inside it).

  Root needs a writable pids cgroup: ``RLIMIT_NPROC`` does not bind uid 0, so without one a fork bomb would
  meet no limit."""
  for tool in ("bwrap", "prlimit"):
    if shutil.which(tool) is None:
      return f"`{tool}` is not installed"
  if os.geteuid() == 0 and _cgroup_base("pids") is None:
    return "running as root without a writable pids cgroup, a process limit cannot hold (RLIMIT_NPROC ignores root)"
  with tempfile.TemporaryDirectory(prefix="jaxeff-sbx-") as tmp:
    try:
      p = subprocess.run([*_bwrap(Path(tmp)), "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
      return f"bwrap could not start: {e}"
  if p.returncode != 0:
    return f"bwrap could not create its namespaces: {p.stderr.decode(errors='replace').strip()[-300:]}"
  return None


def require_isolation(unsafe_no_isolation: bool = False) -> None:
  """Raise ``SandboxUnavailable`` unless the sandbox works here; with ``unsafe_no_isolation`` warn instead."""
  if unsafe_no_isolation:
    print(
      "jaxeff.sandbox: WARNING: running untrusted code WITHOUT isolation (unsafe_no_isolation=True): only "
      "CPU/memory/output limits apply; a program can read and write your files and signal your processes",
      file=sys.stderr,
    )
    return
  why = isolation_problem()
  if why is not None:
    raise SandboxUnavailable(f"{UNAVAILABLE_MESSAGE}: {why}; {INSTALL_HINT}")


class _Slot:
  """One program's folders: ``build`` (the compiler's work directory), a fresh copy of it per test (``work``,
  the only place a test can write; what one test leaves or deletes never reaches the next) and a private folder
  for the inputs."""

  def __init__(self, unsafe: bool):
    self.unsafe = unsafe
    self._tmp = tempfile.TemporaryDirectory(prefix="jaxeff-sbx-")
    self.root = Path(self._tmp.name)
    self.build = self.root / "build"
    self.build.mkdir()
    self.work = self.build
    self.inputs = self.root / "inputs"  # stdin files: outside anything the program can see
    self.inputs.mkdir(mode=0o700)
    self._runs = itertools.count()

  def fresh(self) -> None:
    """A new work directory holding a copy of the build (the previous test's one is removed)."""
    if self.work != self.build:
      shutil.rmtree(self.work, ignore_errors=True)
    self.work = self.root / f"run{next(self._runs)}"
    shutil.copytree(self.build, self.work, symlinks=True)

  def close(self):
    shutil.rmtree(self._tmp.name, ignore_errors=True)


def _nproc(processes: int) -> int:
  """``RLIMIT_NPROC`` (non-root evaluators: the sandbox runs as the evaluator's uid, whose processes count too,
  so the limit is the uid's current count plus the budget; a cgroup, where writable, bounds the tree itself)."""
  mine = 0
  for d in glob.glob("/proc/[0-9]*/task/[0-9]*"):
    try:
      mine += os.stat(d).st_uid == os.getuid()
    except OSError:
      pass
  return mine + processes + 4


def _prlimit(cpu_s: float, memory_mb: int | None, output_bytes: int, processes: int) -> list[str]:
  cpu = max(1, int(cpu_s + 0.999))
  args = [shutil.which("prlimit") or "/usr/bin/prlimit", f"--cpu={cpu}:{cpu + 1}", f"--fsize={output_bytes}"]
  if os.geteuid() != 0:
    args.append(f"--nproc={_nproc(processes)}")
  if memory_mb is not None:
    args.append(f"--as={memory_mb * 1024 * 1024}")
  return [*args, "--"]


# ------------------------------------------------------------------------------------------------ execution
@dataclasses.dataclass
class _Exit:
  rc: int | None  # None: killed by us (wall clock or output cap)
  out: bytes
  err: bytes
  seconds: float
  cpu_s: float
  killed: str = ""  # "wall" | "output"
  started: bool = True  # False: the sandbox itself failed before the program started


_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


def _execute(
  cmd: list[str],
  stdin_file: Path | None,
  wall_s: float,
  cap: int,
  cwd: Path,
  cgroup: _Cgroup | None = None,
  status: tuple[int, int] | None = None,
) -> _Exit:
  """Run ``cmd`` with its output streamed (at most ``cap`` bytes kept per stream; past the cap the process tree
  is killed) and a wall-clock deadline; CPU seconds from ``wait4`` (the tree's reaped processes). With a
  ``cgroup`` the process joins it before it execs, so every descendant is inside. ``status``: the (read, write)
  pipe of bwrap's ``--json-status-fd`` (closed here), which tells a program's exit from a sandbox that never
  started it."""
  if cgroup is not None:
    cmd = ["/bin/sh", "-c", _JOIN, "sh", *cgroup.procs, "--", *cmd]
  stdin = open(stdin_file, "rb") if stdin_file is not None else subprocess.DEVNULL
  t0 = time.perf_counter()
  try:
    proc = subprocess.Popen(
      cmd,
      stdin=stdin,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      start_new_session=True,
      env={"PATH": _SANDBOX_PATH, "LANG": "C.UTF-8"},
      cwd=cwd,
      pass_fds=() if status is None else (status[1],),
    )
  finally:
    if status is not None:
      os.close(status[1])
    if stdin_file is not None:
      stdin.close()
  bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
  sel = selectors.DefaultSelector()
  for f in bufs:
    os.set_blocking(f.fileno(), False)
    sel.register(f, selectors.EVENT_READ)
  killed = ""
  deadline = t0 + wall_s
  while sel.get_map():
    left = deadline - time.perf_counter()
    if left <= 0:
      killed = "wall"
      break
    for key, _ in sel.select(timeout=min(left, 0.5)):
      chunk = os.read(key.fd, 1 << 16)
      if not chunk:
        sel.unregister(key.fileobj)
        continue
      buf = bufs[key.fileobj]
      buf += chunk[: cap + 1 - len(buf)] if len(buf) <= cap else b""
      if len(buf) > cap:
        killed = "output"
    if killed:
      break
  if killed:
    try:
      os.killpg(proc.pid, signal.SIGKILL)  # the outer bwrap; its namespace (every descendant) dies with it
    except ProcessLookupError:
      pass
  sel.close()
  _, wait_status, ru = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(wait_status)
  dt = time.perf_counter() - t0
  for f in bufs:
    f.close()
  info = ""
  if status is not None:
    with os.fdopen(status[0], "rb") as fh:
      info = fh.read().decode(errors="replace")
  started = status is None or "child-pid" in info
  rc = proc.returncode
  m = re.findall(r'"exit-code"\s*:\s*(-?\d+)', info)
  if m:
    rc = int(m[-1])
  out, err = bytes(bufs[proc.stdout])[:cap], bytes(bufs[proc.stderr])[:cap]
  return _Exit(None if killed else rc, out, err, dt, ru.ru_utime + ru.ru_stime, killed, started)


class _InfraError(RuntimeError):
  """The sandbox failed (not the program): an ``EXE`` verdict, never cached."""


def _launch(
  slot: _Slot,
  cmd: list[str],
  *,
  cpu_s: float,
  as_mb: int | None,
  rss_mb: int | None,
  processes: int,
  output_bytes: int,
  wall_s: float,
  stdin: str | None = None,
) -> tuple[_Exit, bool]:
  """Run ``cmd`` in the slot's sandbox under every limit; (exit, whether the tree hit its memory cgroup)."""
  status = None if slot.unsafe else os.pipe()
  prefix, _ = _in_sandbox(slot, slot.unsafe, None if status is None else status[1])
  cg = None
  if not slot.unsafe and _cgroup_base("pids") is not None:
    try:
      cg = _Cgroup(processes + 4, rss_mb)
    except OSError as e:
      os.close(status[0])
      os.close(status[1])
      raise _InfraError(f"could not create the run's cgroup: {e}") from e
  name = None
  if stdin is not None:
    fd, name = tempfile.mkstemp(dir=slot.inputs)
    with os.fdopen(fd, "wb") as fh:
      fh.write(stdin.encode())
  try:
    e = _execute(
      [*prefix, *_prlimit(cpu_s, as_mb, output_bytes, processes), *cmd],
      None if name is None else Path(name),
      wall_s,
      output_bytes,
      slot.work,
      cg,
      status,
    )
    oom = cg is not None and cg.memory_exceeded()
  finally:
    if name is not None:
      os.unlink(name)
    if cg is not None:
      cg.close()
  if not e.started:
    raise _InfraError(e.err.decode(errors="replace")[-500:] or f"exit status {e.rc}")
  return e, oom


def _in_sandbox(slot: _Slot, unsafe: bool, status_fd: int | None = None) -> tuple[list[str], str]:
  """(command prefix, the work directory as the program sees it)."""
  if unsafe:
    return _netns(), str(slot.work)
  return _bwrap(slot.work, status_fd), _WORK


@functools.cache
def _netns() -> list[str]:
  """Unsafe mode only: ``unshare -rn`` (no network) when unprivileged network namespaces work, else nothing."""
  exe = shutil.which("unshare")
  if exe is None:
    return []
  try:
    ok = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
  except (OSError, subprocess.SubprocessError):
    ok = False
  return [exe, "-rn"] if ok else []
