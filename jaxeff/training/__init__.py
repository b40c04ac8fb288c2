"""Training: offline corpora, packing and run data (``data``), ``TrainConfig`` (``config``), optimisers
(``optim``), resumable orbax checkpoints (``checkpoint``), the trainer (``trainer``), named configs
(``presets``), Judge Q's soft-token training (``judgeq``)."""

from jaxeff.training.checkpoint import Checkpointer as Checkpointer
from jaxeff.training.config import TrainConfig as TrainConfig
from jaxeff.training.data import Batch as Batch
from jaxeff.training.data import CorpusMissingError as CorpusMissingError
from jaxeff.training.data import MixtureIterator as MixtureIterator
from jaxeff.training.data import PackedIterator as PackedIterator
from jaxeff.training.data import corpus_texts as corpus_texts
from jaxeff.training.data import load_corpus as load_corpus
from jaxeff.training.data import pack_documents as pack_documents
from jaxeff.training.data import passkey_rows as passkey_rows
from jaxeff.training.data import python_stdlib_files as python_stdlib_files
from jaxeff.training.data import train_bpe as train_bpe
from jaxeff.training.optim import OptimizerConfig as OptimizerConfig
from jaxeff.training.optim import lr_schedule as lr_schedule
from jaxeff.training.optim import make_optimizer as make_optimizer
from jaxeff.training.presets import load_train_config as load_train_config
from jaxeff.training.trainer import TrainResult as TrainResult
from jaxeff.training.trainer import evaluate as evaluate
from jaxeff.training.trainer import make_train_step as make_train_step
from jaxeff.training.trainer import train_and_evaluate as train_and_evaluate
