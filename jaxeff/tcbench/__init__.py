"""TC-Bench (arXiv 2510.08720): the wrong-code x test matrix, its rank and basis, WrongSelect, the exclusion rate."""

from jaxeff.tcbench.matrix import Selection as Selection
from jaxeff.tcbench.matrix import failure_matrix as failure_matrix
from jaxeff.tcbench.matrix import gf2_rank as gf2_rank
from jaxeff.tcbench.matrix import jaccard_objective as jaccard_objective
from jaxeff.tcbench.matrix import local_search as local_search
from jaxeff.tcbench.matrix import qr_basis as qr_basis
from jaxeff.tcbench.matrix import real_rank as real_rank
from jaxeff.tcbench.matrix import wrongselect as wrongselect
from jaxeff.tcbench.score import hack_rate as hack_rate
