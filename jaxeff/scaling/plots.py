"""Figures for scaling studies (matplotlib, Agg-safe): loss vs tokens per model size with fitted curves, and
compute-optimal tokens per parameter vs compute for each fitted law."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def plot_fits(
  N, D, L, fits: dict, path: str | os.PathLike, *, title: str = "", budgets: Sequence[float] | None = None
):
  """Two panels: held-out loss vs D for each N (points) with each law's curves (lines); optimal D/N vs C.

  ``fits`` maps a label to a fit (``ChinchillaFit`` / ``FarseerFit``) or params. Writes a PNG at ``path``.
  """
  import matplotlib

  matplotlib.use("Agg", force=False)
  import matplotlib.pyplot as plt

  from jaxeff.scaling.laws import ChinchillaParams, chinchilla_predict, farseer_predict, optimal_allocation

  N, D, L = (np.asarray(x, float) for x in (N, D, L))
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  dd = np.geomspace(D.min() / 1.5, D.max() * 1.5, 100)
  styles = ["-", "--", ":", "-."]
  for i, n in enumerate(np.unique(N)):
    sel = N == n
    color = f"C{i}"
    axes[0].scatter(D[sel], L[sel], color=color, s=18, label=f"N={n:.3g}")
    for j, (label, fit) in enumerate(fits.items()):
      p = getattr(fit, "params", fit)
      pred = (
        chinchilla_predict(p, n, dd)
        if isinstance(p, ChinchillaParams)
        else farseer_predict(p, np.full_like(dd, n), dd)
      )
      axes[0].plot(dd, pred, styles[j % 4], color=color, lw=1, label=label if i == 0 else None)
  axes[0].set_xscale("log")
  axes[0].set_xlabel("tokens D")
  axes[0].set_ylabel("held-out loss (nats/token)")
  axes[0].legend(fontsize=6, ncol=2)
  C = np.asarray(budgets if budgets is not None else np.geomspace((6 * N * D).min(), (6 * N * D).max() * 10, 12))
  import warnings

  for j, (label, fit) in enumerate(fits.items()):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      r = [optimal_allocation(fit, c).tokens_per_param for c in C]
    axes[1].plot(C, r, styles[j % 4], marker="o", ms=3, label=label)
  axes[1].set_xscale("log")
  axes[1].set_yscale("log")
  axes[1].set_xlabel("compute C = 6ND (FLOPs)")
  axes[1].set_ylabel("optimal D / N")
  axes[1].legend(fontsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
