"""Scaling laws: FLOP / parameter counters, a resumable sweep runner on the trainer, Chinchilla and Farseer fits,
compute-optimal allocation and plots (arXiv 2510.08702, 2203.15556, 2404.10102, 2506.10972)."""

from jaxeff.scaling.laws import CODE_FARSEER as CODE_FARSEER
from jaxeff.scaling.laws import EPOCH as EPOCH
from jaxeff.scaling.laws import HOFFMANN as HOFFMANN
from jaxeff.scaling.laws import ChinchillaParams as ChinchillaParams
from jaxeff.scaling.laws import FarseerParams as FarseerParams
from jaxeff.scaling.laws import bootstrap as bootstrap
from jaxeff.scaling.laws import chinchilla_predict as chinchilla_predict
from jaxeff.scaling.laws import farseer_predict as farseer_predict
from jaxeff.scaling.laws import fit_chinchilla as fit_chinchilla
from jaxeff.scaling.laws import fit_chinchilla_vp as fit_chinchilla_vp
from jaxeff.scaling.laws import fit_farseer as fit_farseer
from jaxeff.scaling.laws import huber as huber
from jaxeff.scaling.laws import mean_relative_error as mean_relative_error
from jaxeff.scaling.laws import optimal_allocation as optimal_allocation
