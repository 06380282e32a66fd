from contract_fixtures import py_project, rust_project, trace_pair  # noqa: F401 - fixtures
