"""Evidence bundles: one folder that proves which commands produced which numbers on which machine.

A bundle is ``reports/NAME/<UTC stamp>/`` (see docs/bundles.md)::

    bundle.json     what this folder is: name, creation time, closed or not
    env.json        an allowlisted set of facts about the machine (never environment variables at large)
    commands.txt    every command run with --bundle, exactly as typed, with its exit status
    NN-VERB.EXT     the outputs of command NN (01-diff.json, 01-diff.md, 01-diff.html, 01-diff.txt...)
    summary.md      written when the bundle is closed
    sha256.txt      written last, when the bundle is closed: the sha256 of every other file

Rules: a bundle folder is never reused or overwritten (two bundles created in the same second get
``-2``, ``-3``... suffixes); parity writes only inside the bundle folder, creates every output
exclusively (never following a symbolic link planted there); ``env.json`` reads specific facts
one by one and never iterates ``os.environ``; a closed bundle is sealed and refuses new commands.

Commands take ``--bundle DIR`` through :func:`bundle_option` and run inside
:func:`bundle_command`, which appends their command line to ``commands.txt`` and gives them a
place to write outputs.

The package's modules: :mod:`.folder` the bundle itself (create, record, close, verify) and the
command wrapper, :mod:`.environment` the allowlisted machine facts of ``env.json``,
:mod:`.cmdline` the running command line (secrets redacted), :mod:`._files` exclusive writes,
checksums and untrusting JSON reads.
"""


from .cmdline import command_argv, command_line, invocation, redact_command_line
from .environment import ENV_SETTINGS, PACKAGES, collect_environment
from .folder import (
    BUNDLE_FORMAT,
    BUNDLE_SCHEMA_VERSION,
    CHECKSUMS,
    COMMANDS,
    ENV,
    MARKER,
    SUMMARY,
    Bundle,
    BundleCheck,
    BundleCommand,
    bundle_command,
    bundle_option,
    close_bundle,
    new_bundle,
    open_bundle,
    verify_bundle,
)

__all__ = [
    "Bundle", "BundleCheck", "BundleCommand", "new_bundle", "open_bundle", "close_bundle", "verify_bundle",
    "collect_environment", "bundle_command", "bundle_option", "invocation", "command_line", "command_argv", "redact_command_line",
    "MARKER", "COMMANDS", "ENV", "SUMMARY", "CHECKSUMS", "BUNDLE_FORMAT", "BUNDLE_SCHEMA_VERSION", "PACKAGES", "ENV_SETTINGS",
]
