"""Find, read and validate contract files (ours and aprender-style ledgers)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from ._yaml import Node, load_yaml
from .aprender import from_aprender, is_aprender
from .errors import ContractError, Problem
from .model import Contract, build_contract
from .schema import validate_node

__all__ = ["LoadResult", "find_contract_files", "load_contract", "load_contracts", "read_tree"]

_SKIP_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", "target", ".tox", ".mypy_cache"}


@dataclass
class LoadResult:
    """Contracts read from files, with every error and warning found (file, line, column).

    >>> _ = open("good.yaml", "w").write("parity_contract: 1\\nid: good\\nclaims: []\\n")
    >>> _ = open("bad.yaml", "w").write("parity_contract: 1\\nid: bad\\nclaims: [{id: a, statement: s, status: done}]\\n")
    >>> r = load_contracts(["good.yaml", "bad.yaml"])
    >>> r.ok, r.files, [c.id for c in r.contracts], [str(p) for p in r.errors]
    (False, ['good.yaml', 'bad.yaml'], ['good'], ['bad.yaml:3:40: claims[0].status is "done", expected one of proposed, algorithm, functional, discharged, blocked'])
    """

    contracts: list[Contract] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_errors(self) -> None:
        """Raise :class:`ContractError` listing every error, if there is any."""
        if self.errors:
            raise ContractError(self.errors)


def find_contract_files(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The ``*.yaml`` / ``*.yml`` files named or found (recursively, sorted) under the directories named.

    Raises:
        ContractError: a path does not exist, or a directory holds no contract file.

    >>> os.makedirs("contracts/sub")
    >>> for p in ("contracts/a.yaml", "contracts/sub/b.yml", "contracts/notes.md"):
    ...     _ = open(p, "w").write("")
    >>> find_contract_files(["contracts"])
    ['contracts/a.yaml', 'contracts/sub/b.yml']
    """
    out: list[str] = []
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            found = []
            for dirpath, dirnames, names in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
                found += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith((".yaml", ".yml"))]
            if not found:
                raise ContractError([Problem(p, 0, 0, "holds no contract file (*.yaml, *.yml)")])
            out += found
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise ContractError([Problem(p, 0, 0, "no such contract file or directory")])
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def read_tree(path: str, root: str | None = None) -> tuple[Node, str, list[Problem]]:
    """Compose a file and, when it is an aprender-style ledger, convert it to our schema.

    Returns:
        ``(tree, source_format, warnings)``.

    Raises:
        ContractError: the file is not valid strict YAML.

    >>> _ = open("l.yaml", "w").write("metadata: {version: 1.0.0}\\nfalsification_tests:\\n- {id: F-1, rule: r, status: FUNCTIONAL}\\n")
    >>> tree, source_format, warnings = read_tree("l.yaml")
    >>> source_format, tree["claims"].plain(), warnings
    ('aprender', [{'id': 'F-1', 'statement': 'r', 'status': 'functional', 'falsification': {'rule': 'r'}}], [])
    """
    node = load_yaml(path)
    if is_aprender(node):
        tree, warnings = from_aprender(node, path, root)
        return tree, "aprender", warnings
    return node, "parity", []


def load_contract(path: str | os.PathLike[str], root: str | None = None) -> Contract:
    """Read one contract file, strictly.

    Raises:
        ContractError: every schema problem of the file (file, line, column, what was expected).

    Example:
        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "c.yaml")
        >>> _ = open(p, "w").write("parity_contract: 1\\nid: demo\\nclaims:\\n- id: a\\n  statement: s\\n  status: proposed\\n")
        >>> load_contract(p).claims[0].status
        'proposed'
    """
    result = load_contracts([path], root=root, resolve=False)
    result.raise_errors()
    return result.contracts[0]


def load_contracts(paths: Iterable[str | os.PathLike[str]], *, root: str | None = None,
                   resolve: bool = True) -> LoadResult:
    """Read and validate every contract file named or found under ``paths``.

    Per file: strict YAML, the schema, unique claim ids, ``binds_to``. Across files (``resolve``):
    unique contract ids and ``depends_on`` naming a contract among them, without cycles. Problems
    are collected, not raised, so one run reports them all.

    Example:
        >>> _ = open("c.yaml", "w").write("parity_contract: 1\\nid: x\\nclaims:\\n- id: a\\n  statment: s\\n"
        ...                               "  status: proposed\\n")
        >>> r = load_contracts(["c.yaml"])
        >>> r.files, [str(p) for p in r.errors][:1]
        (['c.yaml'], ["c.yaml:5:3: unknown key 'statment' in a claim; did you mean 'statement'?"])
    """
    result = LoadResult()
    try:
        result.files = find_contract_files(paths)
    except ContractError as e:
        result.errors += e.problems
        return result
    for path in result.files:
        try:
            tree, fmt, warnings = read_tree(path, root)
        except ContractError as e:
            result.errors += e.problems
            continue
        except OSError as e:
            result.errors.append(Problem(path, 0, 0, f"cannot be read ({e.strerror or e})"))
            continue
        result.warnings += warnings
        problems = validate_node(tree)
        if problems:
            if fmt == "aprender":
                problems = [Problem(p.path, p.line, p.column, f"{p.message} (after reading the aprender ledger)")
                            for p in problems]
            result.errors += problems
            continue
        contract, problems = build_contract(tree, path, fmt)
        result.errors += problems
        if contract is not None:
            result.contracts.append(contract)
    if resolve:
        _cross_check(result)
    return result


def _cross_check(result: LoadResult) -> None:
    by_id: dict[str, Contract] = {}
    for c in result.contracts:
        if c.id in by_id:
            result.errors.append(Problem(c.path, c.line, 1, f"contract id {c.id!r} is also the id of {by_id[c.id].path}"))
        by_id.setdefault(c.id, c)
    for c in result.contracts:
        for dep in c.depends_on:
            if dep not in by_id:
                result.errors.append(Problem(c.path, c.line, 1, f"depends_on {dep!r}: no contract with that id among the "
                                                               f"{len(result.contracts)} checked"))
    state: dict[str, int] = {}

    def visit(cid: str, stack: list[str]) -> None:
        if state.get(cid) == 2 or cid not in by_id:
            return
        if state.get(cid) == 1:
            cycle = stack[stack.index(cid):] + [cid]
            c = by_id[cid]
            result.errors.append(Problem(c.path, c.line, 1, f"depends_on forms a cycle: {' -> '.join(cycle)}"))
            return
        state[cid] = 1
        for dep in by_id[cid].depends_on:
            visit(dep, stack + [cid])
        state[cid] = 2

    for cid in by_id:
        visit(cid, [])
