"""CLI subcommands. Each module defines ``register(group)``; :mod:`parity.cli` finds them."""
