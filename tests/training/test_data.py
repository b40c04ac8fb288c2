"""Corpora, tokenisers, packing and iterator state."""

import numpy as np
import pytest

from jaxeff.tokenizer import ByteTokenizer, HFTokenizer
from jaxeff.training import data as data_lib


def test_stdlib_split_is_deterministic_disjoint_and_excludes_tests():
  train = data_lib.python_stdlib_files("train")
  val = data_lib.python_stdlib_files("validation")
  assert train == data_lib.python_stdlib_files("train")
  assert not set(train) & set(val)
  assert 0.02 < len(val) / (len(train) + len(val)) < 0.09
  for p in train + val:
    assert "site-packages" not in p.parts and "test" not in p.parts[:-1] and "tests" not in p.parts[:-1]


def test_load_corpus_is_a_datasets_dataset():
  ds = data_lib.load_corpus("python", "validation", max_documents=3)
  assert ds.column_names == ["text"] and len(ds) == 3
  assert all(len(t) > 0 for t in ds["text"])


def test_missing_debian_corpus_names_the_package(tmp_path):
  with pytest.raises(data_lib.CorpusMissingError, match="dict-gcide"):
    data_lib.gcide_documents("train", path=tmp_path / "gcide.dict.dz")


@pytest.mark.skipif(not data_lib.GCIDE_PATH.is_file(), reason="dict-gcide is installed by .ci/run")
def test_gcide_corpus_reads_english():
  docs = data_lib.gcide_documents("validation")
  assert len(docs) > 100 and "Webster" in docs[0]


def test_pack_documents_joins_with_eos_and_drops_tail():
  rows = data_lib.pack_documents([[1, 2, 3], [4, 5], [6, 7, 8, 9]], seq_len=3, eos_id=0)
  np.testing.assert_array_equal(rows, [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]])
  with pytest.raises(ValueError, match="cannot fill one row"):
    data_lib.pack_documents([[1]], seq_len=10, eos_id=0)


def test_packed_iterator_state_restores_the_exact_next_batch():
  rows = np.arange(50 * 9).reshape(50, 9).astype(np.int32)
  it = data_lib.PackedIterator(rows, batch_size=7, seed=3)
  for _ in range(9):  # crosses an epoch boundary (50 rows / 7 per batch)
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(4)]
  fresh = data_lib.PackedIterator(rows, batch_size=7, seed=3)
  fresh.set_state(state)
  for w in want:
    g = next(fresh)
    np.testing.assert_array_equal(g.inputs, w.inputs)
    np.testing.assert_array_equal(g.targets, w.targets)
  # every row is seen exactly once per epoch
  it2 = data_lib.PackedIterator(rows, batch_size=5, seed=1)
  seen = np.concatenate([next(it2).inputs[:, 0] for _ in range(10)])
  assert sorted(seen.tolist()) == sorted(rows[:, 0].tolist())


def test_mixture_ratio_and_state():
  a = data_lib.PackedIterator(np.zeros((100, 5), np.int32), 4, seed=0)
  b = data_lib.PackedIterator(np.ones((100, 5), np.int32), 4, seed=0)
  mix = data_lib.MixtureIterator([a, b], [0.25, 0.75], batch_size=8, seed=0)
  share = np.mean([next(mix).inputs[:, 0].mean() for _ in range(200)])
  assert abs(share - 0.75) < 0.03
  state = mix.get_state()
  want = next(mix).inputs
  a2 = data_lib.PackedIterator(np.zeros((100, 5), np.int32), 4, seed=0)
  b2 = data_lib.PackedIterator(np.ones((100, 5), np.int32), 4, seed=0)
  mix2 = data_lib.MixtureIterator([a2, b2], [0.25, 0.75], batch_size=8, seed=0)
  mix2.set_state(state)
  np.testing.assert_array_equal(next(mix2).inputs, want)


def test_bpe_trains_saves_and_loads_in_transformers(tmp_path):
  from transformers import AutoTokenizer

  texts = list(data_lib.load_corpus("python", "validation", max_documents=20)["text"])
  tok = data_lib.train_bpe(texts, 400, tmp_path)
  s = "def foo(bar):\n    return bar + 1\n"
  ids = tok.encode(s, add_bos=False)
  assert tok.decode(ids) == s
  assert len(ids) < len(s.encode())  # merges compress
  hf = AutoTokenizer.from_pretrained(tmp_path)
  assert hf(s, add_special_tokens=False)["input_ids"] == ids
  lens = data_lib.token_byte_lengths(tok, 400)
  assert lens[ids].sum() == len(s.encode())


def test_byte_tokenizer_json_equals_byte_tokenizer(tmp_path):
  data_lib.save_byte_tokenizer(tmp_path)
  hf = HFTokenizer(tmp_path / "tokenizer.json", 256, 257)
  s = "x = 'ünï' \t# 日本\n"
  assert hf.encode(s) == ByteTokenizer().encode(s)
  assert hf.decode(hf.encode(s)) == s


def test_passkey_rows_mask_the_answer_only():
  filler = np.frombuffer(b"import os\nprint(os.getcwd())\n" * 200, np.uint8).astype(np.int32)
  rows, masks = data_lib.passkey_rows(filler, n=4, length=300, seed=0)
  assert rows.shape == (4, 301) and masks.shape == (4, 300)
  for r, m in zip(rows, masks):
    answer = r[1:][m > 0]
    assert len(answer) == 5 and np.array_equal((answer - 260) // 10, np.arange(5)), "digit j uses symbols 260+10j.."
    marks = np.flatnonzero(r == data_lib.KEY_MARKER_ID)
    assert len(marks) == 2  # needle and question
    np.testing.assert_array_equal(r[marks[0] + 1 : marks[0] + 6], answer)  # the needle holds the answer
    assert marks[1] == len(r) - 6 and r[-5:].tolist() == answer.tolist()


def test_pydoc_prose_corpus_splits_are_disjoint_and_cover_the_topics():
  tr, va, al = (data_lib.pydoc_documents(s) for s in ("train", "validation", "all"))
  assert len(tr) > 100 and len(va) > 3 and not set(tr) & set(va)
  assert sorted(tr + va) == sorted(al) and sum(map(len, al)) > 400_000
  assert "assert" in " ".join(al) and "def " not in al[0][:5]
  assert data_lib.load_corpus("pydoc", "validation", max_documents=2).num_rows == 2
  with pytest.raises(ValueError, match="split"):
    data_lib.pydoc_documents("test")


def test_core_paths_need_no_datasets(monkeypatch):
  """datasets is an optional extra: tokenizing a corpus (the trainer's, the evals' path) works without it, and
  load_corpus says what to install."""
  import sys

  from jaxeff.io import MissingDependency
  from jaxeff.tokenizer import ByteTokenizer

  monkeypatch.setitem(sys.modules, "datasets", None)
  docs = data_lib.tokenize_corpus("python", "validation", ByteTokenizer(), max_documents=2)
  assert len(docs) == 2 and all(len(d) > 0 for d in docs)
  with pytest.raises(MissingDependency, match=r"jaxeff\[datasets\]"):
    data_lib.load_corpus("python", "validation", max_documents=2)


def test_user_corpora_text_jsonl_and_clear_errors(tmp_path):
  import json

  rows = [{"text": f"def f{i}(x):\n  return x + {i}\n", "id": i} for i in range(80)]
  (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  train = data_lib.corpus_texts(f"jsonl:{tmp_path / 'c.jsonl'}", "train")
  val = data_lib.corpus_texts(f"jsonl:{tmp_path / 'c.jsonl'}", "validation")
  assert len(train) + len(val) == 80 and val and not set(train) & set(val)  # a disjoint, stable split
  assert val == data_lib.corpus_texts(f"jsonl:{tmp_path / 'c.jsonl'}", "validation")
  (tmp_path / "moved").mkdir()
  (tmp_path / "moved" / "c.jsonl").write_text((tmp_path / "c.jsonl").read_text())
  assert val == data_lib.corpus_texts(f"jsonl:{tmp_path / 'moved' / 'c.jsonl'}", "validation")  # not the path's hash
  (tmp_path / "book.txt").write_text("\n\n".join(f"paragraph {i} " + "word " * 200 for i in range(30)))
  docs = data_lib.user_documents(f"text:{tmp_path / 'book.txt'}")
  assert len(docs) == 15 and all(d.startswith("paragraph") for d in docs)  # ~2 KB blocks of whole paragraphs
  (tmp_path / "d").mkdir()
  (tmp_path / "d" / "a.md").write_text("alpha")
  (tmp_path / "d" / "b.bin").write_bytes(b"\x00")
  assert data_lib.user_documents(f"text:{tmp_path / 'd'}") == ["alpha"]
  (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: .*text"):
    data_lib.user_documents(f"jsonl:{tmp_path / 'bad.jsonl'}")
  with pytest.raises(ValueError, match="does not exist"):
    data_lib.user_documents("text:/no/such/file.txt")


def test_train_on_the_users_jsonl_file(tmp_path, capsys):
  import json

  from jaxeff import cli

  (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": f"x = {i} * {i}\n" * 8}) for i in range(100)))
  argv = ["train", "--config", "preset:smoke", "--out", str(tmp_path / "run"), f"corpora=jsonl:{tmp_path / 'c.jsonl'}"]
  assert cli.main([*argv, "steps=2", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["steps"] == 2 and out["final_eval"]["loss"] > 0
  assert cli.main([*argv[:-1], "corpora=jsonl:/no/such.jsonl", "steps=2"]) == 2
  assert "corpus files not found" in capsys.readouterr().err
