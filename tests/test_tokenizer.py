"""Tokenizers add BOS/EOS exactly as transformers' AutoTokenizer does for the same folder."""

from __future__ import annotations

import json

import pytest

from jaxeff.tokenizer import ByteTokenizer, load_tokenizer

TEXTS = ["hello world", "  two  spaces\\n", "def f(x):\n  return x"]


def _folder(tmp_path, name, *, post: bool, cfg: dict):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=300,
    special_tokens=["<s>", "</s>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(TEXTS * 10, trainer=trainer)
  if post:
    tok.post_processor = processors.TemplateProcessing(
      single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
  d = tmp_path / name
  d.mkdir()
  tok.save(str(d / "tokenizer.json"))
  (d / "tokenizer_config.json").write_text(
    json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", **cfg})
  )
  return d


@pytest.mark.parametrize(
  "name,post,cfg,bos",
  [
    ("llama_style", True, {}, True),  # the post-processor adds BOS
    ("qwen_style", False, {}, False),  # no post-processor, no flag: nothing added
    ("flag_ignored", True, {"add_bos_token": False}, True),  # transformers' fast tokenizer: the post-processor decides
  ],
)
def test_special_tokens_as_transformers_adds_them(tmp_path, name, post, cfg, bos):
  from transformers import AutoTokenizer

  d = _folder(tmp_path, name, post=post, cfg=cfg)
  ref = AutoTokenizer.from_pretrained(str(d))
  ours = load_tokenizer(d)
  for t in TEXTS:
    assert ours.encode(t) == ref(t)["input_ids"], (name, t)
  if bos is not None:
    assert (ours.encode("hi")[0] == ours.bos_id) == bos


def test_jaxeff_byte_folders_keep_their_bos():
  from jaxeff.models.embedded import reference_model_path

  tok = load_tokenizer(reference_model_path("tiny-recall"))
  assert tok.encode("ab") == [256, 97, 98] and tok.encode("ab", add_bos=False) == [97, 98]
  assert ByteTokenizer().encode("ab") == [256, 97, 98]


def test_chat_template_needs_one(tmp_path):
  d = _folder(tmp_path, "plain", post=False, cfg={})
  with pytest.raises(ValueError, match="no chat template"):
    load_tokenizer(d).apply_chat_template([{"role": "user", "content": "hi"}])
  d2 = _folder(
    tmp_path,
    "chat",
    post=False,
    cfg={
      "chat_template": "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    },
  )
  from transformers import AutoTokenizer

  msgs = [{"role": "user", "content": "hello world"}]
  ref = AutoTokenizer.from_pretrained(str(d2)).apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
  assert load_tokenizer(d2).render_chat(msgs) == ref == "[user]hello world[assistant]"
