"""``pip install ./python`` into a fresh venv works, and the installed package runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import ROOT


def test_pip_install_into_a_fresh_venv(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv's own copy
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    python = str(venv / "bin/python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT / "python")],
        check=True, timeout=300, cwd=tmp_path, env=env,
    )
    version = subprocess.run(
        [python, "-m", "burrow", "--version"], capture_output=True, text=True, check=True,
        cwd=tmp_path, env=env, timeout=30,
    ).stdout
    assert version.strip() == "burrow-mesh 0.1.0"
    where = subprocess.run(
        [python, "-c", "import burrow, burrow.sync; print(burrow.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path, env=env, timeout=30,
    ).stdout
    assert where.startswith(str(venv))  # the installed copy, not the source tree
    assert (Path(where).parent / "py.typed").exists()
    help_text = subprocess.run(
        [python, str(ROOT / "python/examples/peers.py"), "--help"], capture_output=True,
        text=True, check=True, cwd=tmp_path, env=env, timeout=30,
    ).stdout
    assert "usage:" in help_text
