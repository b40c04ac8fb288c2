"""Long-context evaluation: RULER-style tasks at exact token lengths and two protocols (question-aware,
question-agnostic) that any prefill backend and cache (``Stack``, ``Press``, CommonKV, int4) runs through."""

from jaxeff.evals.harness import PROTOCOLS as PROTOCOLS
from jaxeff.evals.harness import Metered as Metered
from jaxeff.evals.harness import Method as Method
from jaxeff.evals.harness import bootstrap_ci as bootstrap_ci
from jaxeff.evals.harness import format_table as format_table
from jaxeff.evals.harness import paired_difference as paired_difference
from jaxeff.evals.harness import run_methods as run_methods
from jaxeff.evals.harness import summarize as summarize
from jaxeff.evals.tasks import TASKS as TASKS
from jaxeff.evals.tasks import Example as Example
from jaxeff.evals.tasks import make_example as make_example
from jaxeff.evals.tasks import make_examples as make_examples
from jaxeff.evals.tasks import score as score
