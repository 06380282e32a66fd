"""Contracts: parity claims whose evidence is checked against the code, the tests and the traces.

A contract (YAML, schema in ``contract-v1.schema.json``, documented in docs/contracts.md) lists
claims, each with a status on the lattice ``proposed < algorithm < functional < discharged``
(or ``blocked`` with a reason) and its evidence: code symbols, pytest ids and commands, traces
and bundles. :func:`check_contracts` derives the status the evidence supports; a claim that
states more is overstated. aprender-style ledgers are read too (:mod:`.aprender`).

Needs PyYAML (``pip install 'parity[contracts]'``, which also brings the tree-sitter grammars
for Rust, C, C++ and Go; without them a documented text rule finds definitions).

Example:
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = open(os.path.join(root, "c.yaml"), "w").write(
    ...     "parity_contract: 1\\nid: x\\nclaims:\\n- id: a\\n  statement: s\\n  status: proposed\\n")
    >>> check_contracts([root], root=root).passed
    True
"""

from .check import CheckReport, ClaimResult, Finding, check_contracts, check_loaded
from .emit import dump_yaml
from .errors import ContractError, MissingDependencyError, Problem
from .load import LoadResult, find_contract_files, load_contract, load_contracts
from .model import LEVELS, STATUSES, Claim, CodeRef, Command, Contract, Evidence, ParityRef
from .scaffold import scaffold_contract
from .schema import SCHEMA_VERSION, schema, schema_path

__all__ = [
    "CheckReport", "ClaimResult", "Finding", "check_contracts", "check_loaded", "dump_yaml", "ContractError",
    "MissingDependencyError", "Problem", "LoadResult", "find_contract_files", "load_contract", "load_contracts",
    "LEVELS", "STATUSES", "Claim", "CodeRef", "Command", "Contract", "Evidence", "ParityRef", "scaffold_contract",
    "SCHEMA_VERSION", "schema", "schema_path", "convert_file",
]


def convert_file(path: str, *, root: str | None = None) -> tuple[Contract, list[Problem]]:
    """Read a contract file (aprender-style or ours) and return it in our schema, with the
    warnings (fields not understood, kept under ``extra``).

    Raises:
        ContractError: the file is not valid YAML or cannot be mapped onto the schema.

    >>> _ = open("l.yaml", "w").write("metadata: {version: 1.0.0, author: x}\\n"
    ...                               "falsification_tests:\\n- {id: F-1, rule: r, status: FUNCTIONAL}\\n")
    >>> contract, warnings = convert_file("l.yaml")
    >>> contract.source_format, contract.claims[0].id, contract.claims[0].status, len(warnings)
    ('aprender', 'F-1', 'functional', 1)
    """
    result = load_contracts([path], root=root, resolve=False)
    result.raise_errors()
    return result.contracts[0], list(result.warnings)
