"""Figures for block-sparse prefill: per-head block masks and per-head budgets (matplotlib, optional)."""

from __future__ import annotations

import numpy as np


def plot_block_masks(mask, *, batch: int = 0, heads=None, budgets=None, title: str = "", path=None):
  """One panel per head of a bool block mask ``[B, H, nb, nb]`` (kept blocks dark) and, when ``budgets``
  ``[B, H]`` is given, a bar chart of the per-head budgets. Returns the matplotlib figure; saves to ``path``.

  Example:
    >>> import numpy as np
    >>> fig = plot_block_masks(np.tril(np.ones((1, 2, 4, 4), bool)), budgets=np.array([[2, 4]]))
  """
  import matplotlib.pyplot as plt

  m = np.asarray(mask)[batch]
  heads = list(range(m.shape[0])) if heads is None else list(heads)
  ncols = len(heads) + (budgets is not None)
  fig, axes = plt.subplots(1, ncols, figsize=(2.2 * ncols, 2.4), squeeze=False)
  for ax, h in zip(axes[0], heads):
    ax.imshow(m[h], cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"head {h}: {m[h].sum() / np.tril(np.ones_like(m[h])).sum():.0%}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
  if budgets is not None:
    ax = axes[0][-1]
    b = np.asarray(budgets)[batch]
    ax.bar(range(len(b)), b)
    ax.set_title("budget (blocks)", fontsize=8)
    ax.set_xlabel("head", fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  if path is not None:
    fig.savefig(path, dpi=120)
  return fig
