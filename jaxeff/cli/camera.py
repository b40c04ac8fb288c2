"""`jaxeff camera`: CAMERA micro-expert pruning and mixed-precision quantization of a MoE model."""

from __future__ import annotations

import json

from jaxeff.cli.common import (
  count,
  fraction,
  list_option,
  load_model,
  locks_out,
  positive_float,
)


def register(sub) -> None:
  """Add the `camera` sub-command to ``sub``."""
  ca = sub.add_parser(
    "camera",
    help="CAMERA micro-expert analysis, pruning and mixed-precision quantization of a MoE model",
    description="analyze: micro-expert energies per MoE layer (calibration on stdlib code windows); prune: CAMERA-P "
    "(or a baseline) at --ratio, saved in HF format (masked weights; --compact reports the physically smaller "
    "layout); quantize: CAMERA-Q with energy-ranked bits (default 3/2/1 bits for 40/45/15 %), saved dequantized.",
  )
  ca.add_argument("action", choices=("analyze", "prune", "quantize"), help="analyze, prune or quantize the model")
  ca.add_argument("--model", default="tiny-moe", help="HF folder or an embedded model name (default: %(default)s)")
  ca.add_argument("--out", default=None, help="output HF folder for prune / quantize")
  ca.add_argument(
    "--ratio", type=fraction, default=0.4, help="fraction of micro-experts to prune (default: %(default)s)"
  )
  ca.add_argument(
    "--alpha", type=positive_float, default=0.9, help="energy weight of the max term (default: %(default)s)"
  )
  ca.add_argument(
    "--scoring",
    choices=("camera", "frequency", "magnitude", "random"),
    default="camera",
    help="pruning scores: CAMERA energy or a baseline (default: %(default)s)",
  )
  ca.add_argument("--calib-windows", type=count, default=32, help="calibration windows (default: %(default)s)")
  ca.add_argument("--calib-len", type=count, default=512, help="tokens per calibration window (default: %(default)s)")
  ca.add_argument(
    "--bits", nargs="+", action=list_option(count), default=[3, 2, 1], help="CAMERA-Q bit-widths (default: 3 2 1)"
  )
  ca.add_argument(
    "--bit-ratios",
    nargs="+",
    action=list_option(float),
    default=[0.4, 0.45, 0.15],
    help="share of each bit-width (default: 0.4 0.45 0.15)",
  )
  ca.add_argument(
    "--quantizer", choices=("gptq", "rtn"), default="gptq", help="CAMERA-Q quantizer (default: %(default)s)"
  )
  ca.add_argument("--compact", action="store_true", help="also report the compacted layout's MoE bytes and widths")
  ca.add_argument("--json", action="store_true", help="print one JSON object instead of text")
  ca.set_defaults(func=_cmd_camera)


@locks_out("camera", when=lambda a: a.action != "analyze")
def _cmd_camera(args) -> int:
  import numpy as np

  from jaxeff.models.hf_io import save_hf
  from jaxeff.moe.camera import calibration_windows, camera_prune, compact, mlp_inputs, moe_param_bytes
  from jaxeff.moe.quant import QuantConfig, quantize_model
  from jaxeff.tokenizer import ByteTokenizer
  from jaxeff.training import data as data_lib

  if not 0.0 <= args.ratio <= 1.0:
    raise ValueError(f"--ratio must be in [0, 1], got {args.ratio}")
  qc = QuantConfig(bits=tuple(args.bits), ratios=tuple(args.bit_ratios), method=args.quantizer)
  if args.action != "analyze" and not args.out:
    raise ValueError(f"camera {args.action} needs --out FOLDER")
  config, params, _ = load_model(args.model, "float32")
  if not config.n_experts:
    raise ValueError(f"{args.model} is not a mixture-of-experts model")
  if args.calib_len > config.max_position_embeddings:
    raise ValueError(f"--calib-len {args.calib_len} exceeds the model's {config.max_position_embeddings} positions")
  stream = np.concatenate(data_lib.tokenize_corpus("python", "train", ByteTokenizer()))
  calib = calibration_windows(stream, args.calib_windows, args.calib_len)
  ratio = args.ratio if args.action == "prune" else 0.0
  pruned, rep = camera_prune(
    params, config, calib, ratio, alpha=args.alpha, method=args.scoring, progress=not args.json
  )
  info = {"tokens": rep.tokens, "seconds": rep.seconds, "layers": {}}
  for i, e in rep.energies.items():
    info["layers"][str(i)] = {
      "micro_experts": int(e.size),
      "energy_max": float(e.max()),
      "energy_median": float(np.median(e)),
    }
  out = pruned
  if args.action == "prune":
    info["moe_param_bytes"] = moe_param_bytes(params)
    if args.compact:
      small = compact(pruned, config, rep)
      info["compact_moe_param_bytes"] = moe_param_bytes(small)
      info["compact_channels"] = {str(i): int(small["layers"][i]["mlp"]["gate"].shape[0]) for i in rep.masks}
  if args.action == "quantize":
    out = quantize_model(params, config, rep.energies, qc, mlp_inputs(params, config, calib[:4]))
    info["mean_bits"] = qc.mean_bits
  if args.out:
    save_hf(args.out, config, out)
    info["saved"] = str(args.out)
  if args.json:
    print(json.dumps(info))
  else:
    for k, v in info.items():
      print(f"{k}: {v}")
  return 0
