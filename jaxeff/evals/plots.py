"""Figures for long-context evaluations (matplotlib, optional)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def plot_scores(rows: Sequence[dict], *, title: str = "", path=None):
  """Grouped bars of ``summarize`` rows: one group per (task, length), one bar per method, bootstrap 95 %
  intervals as error bars. Returns the matplotlib figure; saves it to ``path`` when given.

  Example:
    >>> fig = plot_scores([dict(method="dense", task="niah_single", length=1024, n=4, score=75.0, lo=25.0, hi=100.0)])
  """
  import matplotlib.pyplot as plt

  cells = sorted({(r["task"], r["length"]) for r in rows}, key=lambda c: (c[1], c[0]))
  methods = list(dict.fromkeys(r["method"] for r in rows))
  width = 0.8 / max(len(methods), 1)
  fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(cells) * max(1, len(methods)) ** 0.5), 3.2))
  for j, m in enumerate(methods):
    got = {(r["task"], r["length"]): r for r in rows if r["method"] == m}
    xs = [i + (j - (len(methods) - 1) / 2) * width for i, c in enumerate(cells) if c in got]
    rs = [got[c] for c in cells if c in got]
    ys = np.array([r["score"] for r in rs])
    err = np.array([[r["score"] - r["lo"] for r in rs], [r["hi"] - r["score"] for r in rs]])
    ax.bar(xs, ys, width, yerr=err, capsize=2, label=m)
  ax.set_xticks(range(len(cells)))
  ax.set_xticklabels([f"{t}\n{L}" for t, L in cells], fontsize=7)
  ax.set_ylabel("score (points)")
  ax.set_ylim(0, 105)
  ax.legend(fontsize=7)
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  if path is not None:
    fig.savefig(path, dpi=120)
  return fig
