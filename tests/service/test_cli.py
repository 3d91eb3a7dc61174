"""The `webjft` entry point as a whole: heavy libraries load only when a command needs them."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_cli_loads_no_beam_torch_or_faiss():
    # A fresh interpreter: this test process has long imported them all.
    code = ("import sys, service.cli; heavy = {'apache_beam', 'torch', 'faiss', 'open_clip'}; "
            "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
    assert "apitools" not in result.stderr  # Beam's import-time warning, printed on every command before
