"""Which symbols a source file defines: Python by ``ast``; Rust, C, C++ and Go by tree-sitter
grammars when installed (``pip install 'parity[contracts]'``), else by a documented text rule.

Names are qualified with ``::``: a method ``add`` of class (or Rust ``impl``, Go receiver)
``TraceWriter`` is ``TraceWriter::add``; an item in Rust ``mod m`` or a C++ namespace ``m`` is
``m::item``. A cited symbol matches a definition when it equals its qualified name or a trailing
part of it (``add`` and ``TraceWriter::add`` both match ``TraceWriter::add``); ``Type.method``
is read as ``Type::method``.

Text rule (no tree-sitter): Rust ``fn NAME`` / ``struct|enum|trait|type|union|mod|const|static
NAME`` / ``macro_rules! NAME``, with methods qualified by the enclosing ``impl``/``trait`` block
(found by counting braces); C and C++ a line-start ``TYPE NAME(...)`` followed by ``{``,
``struct|class|enum|union NAME {``, ``#define NAME``; Go ``func NAME``, ``func (r *T) NAME``,
``type NAME``. Other file types: the name appears in the file as a whole word.

Every file is read and parsed once per :class:`SourceIndex`.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from dataclasses import dataclass, field

__all__ = ["FileDefs", "SourceIndex", "language_of", "parse_definitions", "tree_sitter_languages"]

_LANGS = {".py": "python", ".pyi": "python", ".rs": "rust", ".c": "c", ".h": "cpp", ".cc": "cpp", ".cpp": "cpp",
          ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp", ".cu": "cpp", ".cuh": "cpp", ".go": "go"}
_SKIP_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", "target", "build", "dist",
              ".tox", ".mypy_cache", ".pytest_cache", "site-packages"}
_MAX_SEARCH_BYTES = 4 << 20


def language_of(path: str) -> str | None:
    """``python``, ``rust``, ``c``, ``cpp``, ``go`` or None, from the file extension.

    Example:
        >>> language_of("src/diff.rs"), language_of("k.cu"), language_of("README.md")
        ('rust', 'cpp', None)
    """
    return _LANGS.get(os.path.splitext(path)[1].lower())


@functools.lru_cache(maxsize=None)
def _ts_parser(lang: str):  # -> tree_sitter.Parser | None
    modules = {"rust": "tree_sitter_rust", "c": "tree_sitter_c", "cpp": "tree_sitter_cpp", "go": "tree_sitter_go"}
    try:
        import importlib

        import tree_sitter

        mod = importlib.import_module(modules[lang])
        language = tree_sitter.Language(mod.language())
        try:
            return tree_sitter.Parser(language)
        except TypeError:  # tree-sitter < 0.22
            p = tree_sitter.Parser()
            p.set_language(language)
            return p
    except Exception:  # noqa: BLE001 - any missing or incompatible grammar means: use the text rule
        return None


def tree_sitter_languages() -> list[str]:
    """The languages whose tree-sitter grammar is installed (the others use the text rule).

    >>> set(tree_sitter_languages()) <= {"rust", "c", "cpp", "go"}  # which ones depends on the install
    True
    """
    return [lang for lang in ("rust", "c", "cpp", "go") if _ts_parser(lang) is not None]


@dataclass
class FileDefs:
    """The definitions of one file.

    Attributes:
        path: as cited (relative to the root).
        language: ``python``, ``rust``, ``c``, ``cpp``, ``go`` or ``text``.
        method: ``ast``, ``tree-sitter`` or ``text rule``.
        names: qualified names of the definitions, mapped to their 1-based line.
        error: why the file could not be parsed (then only the text rule was applied), or None.
        text: the file's text (kept only for files of no known language).

    >>> d = parse_definitions("w.py", "class TraceWriter:\\n    def add(self): pass\\n\\ndef f(): pass\\n")
    >>> d.language, d.method, d.names
    ('python', 'ast', {'TraceWriter': 1, 'TraceWriter::add': 2, 'f': 4})
    """

    path: str
    language: str
    method: str
    names: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    text: str | None = None
    _by_last: dict[str, list[str]] | None = None

    def lookup(self, symbol: str) -> str | None:
        """The qualified name ``symbol`` matches here, or None.

        Example:
            >>> d = parse_definitions("w.py", "class TraceWriter:\\n    def add(self): pass\\n")
            >>> d.lookup("add"), d.lookup("TraceWriter.add"), d.lookup("remove")
            ('TraceWriter::add', 'TraceWriter::add', None)
        """
        sym = _normalize(symbol)
        if not sym:
            return None
        if self.language == "text":
            return sym if self.text is not None and re.search(rf"(?<!\w){re.escape(sym.split('::')[-1])}(?!\w)", self.text) else None
        if sym in self.names:
            return sym
        by_last = self._by_last
        if by_last is None:  # built whole, then published (lookups may run on two threads)
            by_last = {}
            for q in self.names:
                by_last.setdefault(q.rsplit("::", 1)[-1], []).append(q)
            self._by_last = by_last
        last = sym.rsplit("::", 1)[-1]
        for q in sorted(by_last.get(last, ()), key=lambda q: (q.count("::"), q)):
            if q == sym or q.endswith("::" + sym):
                return q
        return None

    def close_matches(self, symbol: str, n: int = 3) -> list[str]:
        """Names defined here that look like ``symbol`` (for "did you mean")."""
        import difflib

        last = _normalize(symbol).rsplit("::", 1)[-1]
        lasts = {q.rsplit("::", 1)[-1]: q for q in self.names}
        return [lasts[m] for m in difflib.get_close_matches(last, list(lasts), n=n, cutoff=0.6)]


def _normalize(symbol: str) -> str:
    s = symbol.strip().strip("`").strip()
    if s.endswith("()"):
        s = s[:-2]
    if "::" not in s and "." in s:
        s = s.replace(".", "::")
    return s


# -- Python --------------------------------------------------------------------------------------

_CHILD = """
import json, sys
from parity.contracts.symbols import FileDefs, _python
d = FileDefs(path="-", language="python", method="ast")
_python(d, sys.stdin.read())
json.dump({"names": d.names, "error": d.error}, sys.stdout)
"""


def _python_in_child(defs: FileDefs, text: str) -> None:
    """Parse in a fresh interpreter: CPython 3.11's AST module can keep a corrupted recursion
    count after an error elsewhere in the process ("AST constructor recursion depth mismatch")."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _CHILD], input=text, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PARITY_AST_CHILD": "1"})
    if proc.returncode != 0:
        defs.error = "not parsed (the Python parser failed in this process and in a fresh one)"
        return
    got = json.loads(proc.stdout)
    defs.names.update({k: int(v) for k, v in got["names"].items()})
    defs.error = got["error"]


def _python(defs: FileDefs, text: str) -> None:
    try:
        tree = ast.parse(text)
    except SystemError:
        if os.environ.get("PARITY_AST_CHILD"):
            raise
        _python_in_child(defs, text)
        return
    except (SyntaxError, ValueError) as e:
        defs.error = f"not valid Python ({e.__class__.__name__}: line {getattr(e, 'lineno', '?')})"
        for m in re.finditer(r"^\s*(?:async\s+)?(?:def|class)\s+(\w+)", text, re.M):
            defs.names.setdefault(m.group(1), text.count("\n", 0, m.start()) + 1)
        return

    def add(name: str, line: int) -> None:
        defs.names.setdefault(name, line)

    def body(stmts: list[ast.stmt], prefix: str) -> None:
        for s in stmts:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
                add(prefix + s.name, s.lineno)
            elif isinstance(s, ast.ClassDef):
                add(prefix + s.name, s.lineno)
                body(s.body, f"{prefix}{s.name}::")
            elif isinstance(s, ast.Assign):
                for t in s.targets:
                    for n in _target_names(t):
                        add(prefix + n, s.lineno)
            elif isinstance(s, (ast.AnnAssign, ast.AugAssign)) and isinstance(s.target, ast.Name):
                add(prefix + s.target.id, s.lineno)
            elif isinstance(s, ast.If):
                body(s.body, prefix)
                body(s.orelse, prefix)
            elif isinstance(s, ast.Try) or type(s).__name__ == "TryStar":
                body(s.body, prefix)
                for h in s.handlers:
                    body(h.body, prefix)
                body(s.orelse, prefix)
                body(s.finalbody, prefix)
            elif isinstance(s, (ast.With, ast.AsyncWith)):
                body(s.body, prefix)

    body(tree.body, "")


def _target_names(t: ast.expr) -> list[str]:
    if isinstance(t, ast.Name):
        return [t.id]
    if isinstance(t, (ast.Tuple, ast.List)):
        return [n for e in t.elts for n in _target_names(e)]
    return []


# -- tree-sitter ---------------------------------------------------------------------------------

def _txt(node) -> str:
    return node.text.decode("utf-8", "replace") if node is not None and node.text is not None else ""


def _type_name(node) -> str:
    """The bare name of a type node: Foo for Foo, Foo<T>, a::Foo, &Foo, *Foo."""
    while node is not None and node.type in ("generic_type", "reference_type", "pointer_type", "scoped_type_identifier",
                                             "qualified_type", "parenthesized_type"):
        nxt = node.child_by_field_name("type") or node.child_by_field_name("name")
        if nxt is None:
            named = [c for c in node.named_children if c.type.endswith("identifier") or c.type.endswith("type")]
            nxt = named[-1] if named else None
        if nxt is None or nxt == node:
            break
        node = nxt
    return re.sub(r"<.*", "", _txt(node)).split("::")[-1].strip()


def _rust(defs: FileDefs, root) -> None:
    items = {"function_item", "function_signature_item", "struct_item", "enum_item", "union_item", "trait_item",
             "type_item", "const_item", "static_item", "macro_definition", "mod_item"}

    def walk(container, prefix: str) -> None:
        for n in container.named_children:
            t = n.type
            if t in items:
                name = _txt(n.child_by_field_name("name"))
                if name:
                    defs.names.setdefault(prefix + name, n.start_point[0] + 1)
                body = n.child_by_field_name("body")
                if t in ("mod_item", "trait_item") and body is not None and name:
                    walk(body, f"{prefix}{name}::")
            elif t == "impl_item":
                tname = _type_name(n.child_by_field_name("type"))
                body = n.child_by_field_name("body")
                if body is not None and tname:
                    walk(body, f"{prefix}{tname}::")
            elif t in ("declaration_list", "attribute_item"):
                walk(n, prefix)

    walk(root, "")


def _c_declarator_name(node) -> str | None:
    seen = 0
    while node is not None and seen < 20:
        seen += 1
        if node.type == "function_declarator":
            d = node.child_by_field_name("declarator")
            return re.sub(r"\s+", "", _txt(d)) if d is not None else None
        node = node.child_by_field_name("declarator")
    return None


def _cfamily(defs: FileDefs, root) -> None:
    def walk(container, prefix: str) -> None:
        for n in container.named_children:
            t = n.type
            if t == "function_definition" or (t in ("field_declaration", "declaration") and prefix.endswith("::class")):
                name = _c_declarator_name(n.child_by_field_name("declarator"))
                if name:
                    defs.names.setdefault(prefix.removesuffix("class") + name if prefix.endswith("::class") else prefix + name,
                                          n.start_point[0] + 1)
            elif t in ("struct_specifier", "class_specifier", "union_specifier", "enum_specifier"):
                name = _txt(n.child_by_field_name("name"))
                body = n.child_by_field_name("body")
                if name and body is not None:
                    defs.names.setdefault(prefix.removesuffix("class") + name, n.start_point[0] + 1)
                    if t != "enum_specifier":
                        walk(body, f"{prefix.removesuffix('class')}{name}::class")
            elif t == "namespace_definition":
                name = _txt(n.child_by_field_name("name"))
                body = n.child_by_field_name("body")
                if body is not None:
                    walk(body, f"{prefix}{name}::" if name else prefix)
            elif t == "type_definition":
                d = n.child_by_field_name("declarator")
                if d is not None and d.type in ("type_identifier", "primitive_type"):
                    defs.names.setdefault(prefix + _txt(d), n.start_point[0] + 1)
                ty = n.child_by_field_name("type")
                if ty is not None and ty.child_by_field_name("body") is not None:
                    walk_one(ty, prefix)
            elif t in ("preproc_def", "preproc_function_def"):
                name = _txt(n.child_by_field_name("name"))
                if name:
                    defs.names.setdefault(prefix + name, n.start_point[0] + 1)
            elif t in ("template_declaration", "linkage_specification", "declaration_list", "preproc_ifdef", "preproc_if",
                       "preproc_else", "preproc_elif", "access_specifier", "field_declaration_list"):
                walk(n, prefix)
            elif t == "declaration":
                for c in n.named_children:
                    if c.type in ("struct_specifier", "class_specifier", "union_specifier", "enum_specifier"):
                        walk_one(c, prefix)

    def walk_one(n, prefix):
        class _Wrap:
            named_children = [n]
        walk(_Wrap, prefix)

    walk(root, "")


def _go(defs: FileDefs, root) -> None:
    for n in root.named_children:
        t = n.type
        if t == "function_declaration":
            defs.names.setdefault(_txt(n.child_by_field_name("name")), n.start_point[0] + 1)
        elif t == "method_declaration":
            recv = n.child_by_field_name("receiver")
            tname = ""
            if recv is not None:
                for p in recv.named_children:
                    tname = _type_name(p.child_by_field_name("type"))
            name = _txt(n.child_by_field_name("name"))
            defs.names.setdefault(f"{tname}::{name}" if tname else name, n.start_point[0] + 1)
        elif t in ("type_declaration", "const_declaration", "var_declaration"):
            for spec in n.named_children:
                for c in ([spec] if spec.type.endswith("_spec") else spec.named_children):
                    for name in c.children_by_field_name("name"):
                        if name.type.endswith("identifier"):
                            defs.names.setdefault(_txt(name), c.start_point[0] + 1)


# -- text rules ----------------------------------------------------------------------------------

_RUST_FN = re.compile(r"^\s*(?:pub(?:\s*\([^)]*\))?\s+)?(?:(?:const|async|unsafe|default|extern(?:\s+\"[^\"]*\")?)\s+)*fn\s+([A-Za-z_]\w*)")
_RUST_ITEM = re.compile(r"^\s*(?:pub(?:\s*\([^)]*\))?\s+)?(?:unsafe\s+)?(struct|enum|trait|type|union|mod|const|static)\s+(?:mut\s+)?([A-Za-z_]\w*)")
_RUST_MACRO = re.compile(r"^\s*macro_rules!\s*([A-Za-z_]\w*)")
_RUST_IMPL = re.compile(r"^\s*(?:unsafe\s+)?impl\b(?:\s*<[^{]*?>)?\s+(?:[^{]*?\bfor\s+)?&?(?:[\w:]+::)?([A-Za-z_]\w*)")
_C_FUNC = re.compile(r"^(?!\s*(?:if|for|while|switch|return|else|do|case|sizeof|typedef)\b)\s*[A-Za-z_][\w\s\*&<>,:~]*?[\s\*&>]([A-Za-z_~][\w:~]*)\s*\([^;{]*\)\s*(?:const\s*)?(?:noexcept\s*)?(?:override\s*)?(?:\{|$)")
_C_TYPE = re.compile(r"^\s*(?:typedef\s+)?(?:struct|class|enum|union)\s+([A-Za-z_]\w*)[^;]*(?:\{|$)")
_C_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_]\w*)")
_GO_FUNC = re.compile(r"^func\s+(?:\(\s*\w*\s*\*?\s*([A-Za-z_]\w*)[^)]*\)\s*)?([A-Za-z_]\w*)")
_GO_TYPE = re.compile(r"^type\s+([A-Za-z_]\w*)")


def _strip_strings(line: str) -> str:
    line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(?:\\.|[^'\\])'", "''", line)
    return line.split("//", 1)[0]


def _text_rule(defs: FileDefs, text: str, lang: str) -> None:
    lines = text.splitlines()
    if lang == "rust":
        stack: list[tuple[str, int]] = []
        depth = 0
        pending: str | None = None
        for i, raw in enumerate(lines, 1):
            for seg in re.split(r"([{}])", _strip_strings(raw)):
                if seg == "{":
                    depth += 1
                    if pending is not None:
                        stack.append((pending, depth))
                        pending = None
                    continue
                if seg == "}":
                    if stack and stack[-1][1] == depth:
                        stack.pop()
                    depth -= 1
                    continue
                prefix = "".join(f"{name}::" for name, _ in stack)
                m = _RUST_FN.match(seg)
                if m:
                    defs.names.setdefault(prefix + m.group(1), i)
                m = _RUST_ITEM.match(seg)
                if m:
                    defs.names.setdefault(prefix + m.group(2), i)
                    if m.group(1) in ("trait", "mod"):
                        pending = m.group(2)
                m = _RUST_MACRO.match(seg)
                if m:
                    defs.names.setdefault(prefix + m.group(1), i)
                m = _RUST_IMPL.match(seg)
                if m:
                    pending = m.group(1)
                if pending is not None and seg.rstrip().endswith(";"):
                    pending = None
    elif lang in ("c", "cpp"):
        for i, raw in enumerate(lines, 1):
            line = _strip_strings(raw)
            m = _C_DEFINE.match(line)
            if m:
                defs.names.setdefault(m.group(1), i)
                continue
            m = _C_TYPE.match(line)
            if m:
                defs.names.setdefault(m.group(1), i)
                continue
            m = _C_FUNC.match(line)
            if m and not line.rstrip().endswith(";"):
                rest = line[m.end(1):]
                if "{" in rest or (i < len(lines) and lines[i].strip().startswith("{")):
                    defs.names.setdefault(m.group(1), i)
    elif lang == "go":
        for i, line in enumerate(lines, 1):
            m = _GO_FUNC.match(line)
            if m:
                defs.names.setdefault(f"{m.group(1)}::{m.group(2)}" if m.group(1) else m.group(2), i)
            m = _GO_TYPE.match(line)
            if m:
                defs.names.setdefault(m.group(1), i)


def parse_definitions(path: str, text: str, *, use_tree_sitter: bool = True) -> FileDefs:
    """The definitions in ``text`` (the content of ``path``; its extension picks the language).

    Example:
        >>> src = "struct Loader;\\nimpl Loader {\\n    pub fn load_tensor(&self) {}\\n}\\nfn main() {}\\n"
        >>> d = parse_definitions("src/diff.rs", src)
        >>> sorted(d.names), d.lookup("load_tensor")
        (['Loader', 'Loader::load_tensor', 'main'], 'Loader::load_tensor')
    """
    lang = language_of(path)
    if lang == "python":
        defs = FileDefs(path, "python", "ast")
        _python(defs, text)
        return defs
    if lang is None:
        return FileDefs(path, "text", "word match", text=text)
    parser = _ts_parser(lang) if use_tree_sitter else None
    if parser is not None:
        defs = FileDefs(path, lang, "tree-sitter")
        tree = parser.parse(text.encode("utf-8"))
        {"rust": _rust, "c": _cfamily, "cpp": _cfamily, "go": _go}[lang](defs, tree.root_node)
        return defs
    defs = FileDefs(path, lang, "text rule")
    _text_rule(defs, text, lang)
    return defs


class SourceIndex:
    """Definitions of the files under ``root``, each file read and parsed at most once.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp(); os.makedirs(os.path.join(root, "src"))
        >>> _ = open(os.path.join(root, "src", "b.py"), "w").write("def moved(): pass\\n")
        >>> idx = SourceIndex(root)
        >>> idx.get("src/a.py") is None, idx.where_defined("moved")
        (True, [('src/b.py', 'moved', 1)])
    """

    def __init__(self, root: str | os.PathLike[str] = ".", *, use_tree_sitter: bool = True):
        self.root = os.path.abspath(os.fspath(root))
        self.use_tree_sitter = use_tree_sitter
        self._files: dict[str, FileDefs | None] = {}
        self._all: list[str] | None = None

    def full(self, rel: str) -> str:
        return os.path.normpath(os.path.join(self.root, rel))

    def inside(self, rel: str) -> bool:
        full = self.full(rel)
        return full == self.root or full.startswith(self.root + os.sep)

    def get(self, rel: str) -> FileDefs | None:
        """The definitions of ``rel`` (relative to the root), or None when it is not a readable file."""
        key = os.path.normpath(rel)
        if key not in self._files:
            full = self.full(rel)
            try:
                with open(full, "rb") as f:
                    data = f.read()
            except OSError:
                self._files[key] = None
            else:
                self._files[key] = parse_definitions(rel, data.decode("utf-8", "replace"),
                                                     use_tree_sitter=self.use_tree_sitter)
        return self._files[key]

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.full(rel))

    def all_sources(self) -> list[str]:
        """Every source file of a known language under the root (relative paths, sorted)."""
        if self._all is None:
            out = []
            for dirpath, dirnames, names in os.walk(self.root):
                dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")
                                     and not d.endswith(".egg-info"))
                for n in sorted(names):
                    if language_of(n) is not None:
                        out.append(os.path.relpath(os.path.join(dirpath, n), self.root).replace(os.sep, "/"))
            self._all = out
        return self._all

    def where_defined(self, symbol: str, language: str | None = None) -> list[tuple[str, str, int]]:
        """Every ``(file, qualified name, line)`` in the repository where ``symbol`` is defined."""
        last = _normalize(symbol).rsplit("::", 1)[-1].encode()
        if not last:
            return []
        out = []
        for rel in self.all_sources():
            if language is not None and not _same_family(language_of(rel), language):
                continue
            full = self.full(rel)
            try:
                if os.path.getsize(full) > _MAX_SEARCH_BYTES:
                    continue
                if rel not in self._files:
                    with open(full, "rb") as f:
                        if last not in f.read():
                            continue
            except OSError:
                continue
            d = self.get(rel)
            q = d.lookup(symbol) if d is not None else None
            if q is not None:
                out.append((rel, q, d.names.get(q, 0)))
        return out

    def files_named(self, basename: str) -> list[str]:
        return [p for p in self.all_sources() if os.path.basename(p) == basename]


def _same_family(a: str | None, b: str) -> bool:
    fam = {"c": "c", "cpp": "c"}
    return a is not None and fam.get(a, a) == fam.get(b, b)
