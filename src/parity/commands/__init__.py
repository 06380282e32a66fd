"""CLI subcommands, one module per verb; :data:`parity.cli.COMMANDS` lists them in ``--help`` order."""
