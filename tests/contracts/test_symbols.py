"""Definitions found per language, by tree-sitter and by the text rule."""

import pytest

from parity.contracts.symbols import parse_definitions, tree_sitter_languages

C_SRC = """#include <stdio.h>
#define MAX_STAGES 64
struct stage { int n; };
static int *find_stage(const char *name) {
    return 0;
}
int dump_stage(struct stage *s)
{
    return s->n;
}
int declared_only(void);
"""
CPP_SRC = """namespace trace {
class Writer {
 public:
  void add(int x);
};
}
void trace::Writer::add(int x) {}
template <typename T> T clamp(T x) { return x; }
"""
GO_SRC = """package trace
type Writer struct{}
func (w *Writer) Add(x int) {}
func Open(path string) *Writer { return nil }
"""


@pytest.mark.parametrize("ts", [True, False], ids=["tree-sitter", "text-rule"])
@pytest.mark.parametrize("path,src,present,absent", [
    ("dump.c", C_SRC, ["MAX_STAGES", "stage", "find_stage", "dump_stage"], ["declared_only", "printf"]),
    ("writer.cpp", CPP_SRC, ["trace::Writer::add", "Writer::add", "add", "clamp"], ["remove"]),
    ("writer.go", GO_SRC, ["Writer", "Writer::Add", "Writer.Add", "Open"], ["Close"]),
])
def test_definitions(ts, path, src, present, absent):
    lang = {"c": "c", "cpp": "cpp", "go": "go"}[path.rsplit(".", 1)[1]]
    if ts and lang not in tree_sitter_languages():
        pytest.skip(f"tree-sitter grammar for {lang} is not installed")
    d = parse_definitions(path, src, use_tree_sitter=ts)
    assert d.method == ("tree-sitter" if ts else "text rule")
    for name in present:
        assert d.lookup(name) is not None, (name, sorted(d.names))
    for name in absent:
        assert d.lookup(name) is None, name


def test_python_definitions_and_syntax_errors():
    d = parse_definitions("m.py", "try:\n    import x\nexcept ImportError:\n    def fallback(): pass\n"
                                  "A, (B, C) = 1, (2, 3)\nclass K:\n    class Inner:\n        def m(self): pass\n")
    assert {"fallback", "A", "B", "C", "K::Inner::m"} <= set(d.names) and d.lookup("Inner::m") == "K::Inner::m"
    bad = parse_definitions("b.py", "def ok():\n    pass\ndef broken(:\n")
    assert bad.error and bad.lookup("ok") == "ok"
