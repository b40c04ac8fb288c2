"""The import graph of the package: no circles, and no arrow from a lower layer to a higher one.

Every ``import`` counts, module level or inside a function (a lazy import is still a dependency), except the
body of a module-level ``__getattr__`` (where deprecated aliases forward to a moved name for one release) and
``if TYPE_CHECKING:`` blocks (annotations only).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Method and application packages that the substrate must never import.
METHODS = {
  "jaxeff.kvcache",
  "jaxeff.moe",
  "jaxeff.generation",
  "jaxeff.scaling",
  "jaxeff.codetrans",
  "jaxeff.tcbench",
  "jaxeff.theory",
  "jaxeff.tasks",
  "jaxeff.evals",
  "jaxeff.stack",
  "jaxeff.tour",
  "jaxeff.cli",
  "jaxeff.training",
}


def _modules() -> dict[str, Path]:
  out = {}
  for f in sorted([*ROOT.joinpath("jaxeff").rglob("*.py"), *ROOT.joinpath("kernels_pallas").rglob("*.py")]):
    parts = f.relative_to(ROOT).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = f
  return out


def _shim_nodes(tree: ast.Module) -> set[int]:
  """ids of the nodes inside a module-level ``def __getattr__`` (deprecation forwarding) or an
  ``if TYPE_CHECKING:`` block (annotations only, never imported at run time)."""
  skip = set()
  for node in tree.body:
    if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
      skip.update(id(n) for n in ast.walk(node))
    if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
      skip.update(id(n) for n in ast.walk(node))
  return skip


def import_graph() -> dict[str, set[str]]:
  mods = _modules()
  graph: dict[str, set[str]] = {m: set() for m in mods}
  for m, f in mods.items():
    tree = ast.parse(f.read_text())
    skip = _shim_nodes(tree)
    pkg_parts = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
    for node in ast.walk(tree):
      if id(node) in skip:
        continue
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          base = ".".join(pkg_parts[: len(pkg_parts) - node.level + 1] + ([node.module] if node.module else []))
        targets = [f"{base}.{a.name}" for a in node.names] + [base]
      else:
        continue
      for t in targets:
        while t and t not in mods and "." in t:
          t = t.rsplit(".", 1)[0]
        if t in mods and t != m and not m.startswith(t + "."):  # a package's __init__ is not an edge back up
          graph[m].add(t)
  return graph


def _package(m: str) -> str:
  parts = m.split(".")
  return ".".join(parts[:2]) if parts[0] == "jaxeff" and len(parts) > 1 else parts[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one node (Tarjan)."""
  index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in list(graph):
    if v not in index:
      visit(v)
  return out


def test_no_import_circle_between_modules_or_packages():
  g = import_graph()
  assert _cycles(g) == []
  pkgs: dict[str, set[str]] = {}
  for a, bs in g.items():
    for b in bs:
      if _package(a) != _package(b):
        pkgs.setdefault(_package(a), set()).add(_package(b))
  assert _cycles(pkgs) == []


def test_layers_point_down():
  g = import_graph()
  bad = []
  for a, bs in g.items():
    for b in bs:
      pa, pb = _package(a), _package(b)
      if pa == "kernels_pallas" and b.startswith("jaxeff"):
        bad.append(f"{a} -> {b} (kernels import no jaxeff)")
      if pa in ("jaxeff.models", "jaxeff.attention", "jaxeff.config", "jaxeff.sharding") and pb in METHODS:
        bad.append(f"{a} -> {b} (the substrate imports no method package)")
      if pa == "jaxeff.tcbench" and pb == "jaxeff.models":
        bad.append(f"{a} -> {b} (tcbench imports no models)")
      if pa == "jaxeff.kvcache" and pb in ("jaxeff.training", "jaxeff.generation", "jaxeff.evals"):
        bad.append(f"{a} -> {b} (caches sit below the sampler, the trainer and the evaluators)")
  assert bad == []


def test_the_checker_sees_a_circle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert _cycles({"a": {"b"}, "b": set()}) == []


def test_top_level_exports_what_its_docstring_promises():
  import jaxeff

  for name in ("ModelConfig", "forward", "init_params", "load_hf", "save_hf", "Dense", "FullCache", "Sampler"):
    assert name in jaxeff.__doc__ and callable(getattr(jaxeff, name)), name
  assert "Sampler" in dir(jaxeff)
