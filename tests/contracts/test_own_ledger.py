"""The repository's own ledger (contracts/) holds: every claim's evidence checks out, commands run."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_repository_ledger_checks_with_run():
    if os.environ.get("PARITY_LEDGER_CHECK_RUNNING"):  # the ledger's own --run test ids land here: no recursion
        return
    env = {**os.environ, "PARITY_LEDGER_CHECK_RUNNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "parity.cli", "contract", "check", "--run", "contracts/"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
