"""The sandbox on real compilers: AC, WA, TLE, RE and CE for C++, Python and Java; comparison rules; the cache."""

import shutil
import time

import pytest

from jaxeff.sandbox import Limits, Program, outputs_match, run_many, run_tests

TESTS = [("3 4\n", "7\n"), ("10 -2\n", "8")]
LIMITS = Limits(time_s=1.0, memory_mb=256)

CPP = {
  "AC": '#include <cstdio>\nint main(){long a,b;scanf("%ld %ld",&a,&b);printf("%ld\\n",a+b);}',
  "WA": '#include <cstdio>\nint main(){long a,b;scanf("%ld %ld",&a,&b);printf("%ld\\n",a-b);}',
  "TLE": "int main(){volatile unsigned long x=0;for(;;)x++;}",
  "RE": "#include <cstdlib>\nint main(){abort();}",
  "CE": "int main(){ this is not c++ }",
}
PY = {
  "AC": "a, b = map(int, input().split())\nprint(a + b)",
  "WA": "a, b = map(int, input().split())\nprint(a * b)",
  "TLE": "while True:\n  pass",
  "RE": "raise SystemExit(3)",
  "CE": "def f(:\n  pass",
}
JAVA = {
  "AC": "import java.util.*;\npublic class Sum { public static void main(String[] a) { Scanner s = new Scanner("
  "System.in); long x = s.nextLong(), y = s.nextLong(); System.out.println(x + y); } }",
  "WA": "public class Main { public static void main(String[] a) { System.out.println(0); } }",
  "TLE": "public class Main { public static void main(String[] a) { long x = 0; while (true) { x++; } } }",
  "RE": 'public class Main { public static void main(String[] a) { throw new RuntimeException("x"); } }',
  "CE": 'public class Main { public static void main(String[] a) { int x = "s"; } }',
}


@pytest.mark.parametrize(
  "lang, cases, needs",
  [("cpp", CPP, "g++"), ("python", PY, None), ("java", JAVA, "javac")],
)
def test_verdicts_on_real_toolchains(lang, cases, needs):
  if needs and shutil.which(needs) is None:
    pytest.fail(f"{needs} is not installed: the sandbox tests need it")
  programs = [Program(src, lang) for src in cases.values()]
  t0 = time.perf_counter()
  results = run_many(programs, TESTS, LIMITS, workers=2)
  assert time.perf_counter() - t0 < 60  # the infinite loops were stopped
  for want, verdicts in zip(cases, results):
    assert [v.status for v in verdicts] == [want, want], (lang, want, [v.detail for v in verdicts])


def test_output_rules_and_cache(tmp_path):
  assert outputs_match("  1 2 \n\n3\n", "1 2 3")
  assert outputs_match("0.3333333", "0.333333")
  assert not outputs_match("0.33", "0.34") and not outputs_match("1 2", "12")
  prog = Program("import sys\nprint(sys.stdin.read().strip()[::-1])", "python")
  first = run_tests(prog, [("abc", "cba"), ("xy", None)], cache_dir=tmp_path)
  assert [v.status for v in first] == ["AC", "OK"] and first[1].output.strip() == "yx"
  again = run_tests(prog, [("abc", "cba"), ("xy", None)], cache_dir=tmp_path)
  assert [v.status for v in again] == ["AC", "OK"] and again[0].seconds == first[0].seconds  # from the cache
  with pytest.raises(ValueError, match="unsupported language"):
    Program("x", "rust")


def test_java_class_without_public_modifier_runs():
  src = "class Puzzle { public static void main(String[] a) { System.out.println(7); } }"
  (v,) = run_tests(Program(src, "java"), [("", "7")], LIMITS)
  assert v.status == "AC"
