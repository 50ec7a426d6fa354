"""The public surface stays honest: __all__ is complete, and usage examples type-check."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import chatsdk


def test_every_public_name_is_in_all() -> None:
    public = {
        name
        for name, value in vars(chatsdk).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").startswith("chatsdk")
    }
    missing = public - set(chatsdk.__all__)
    assert not missing, f"public names missing from chatsdk.__all__: {sorted(missing)}"


def test_every_name_in_all_exists_and_is_documented() -> None:
    for name in chatsdk.__all__:
        value = getattr(chatsdk, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"chatsdk.{name} has no docstring"


def test_usage_examples_type_check_under_mypy_strict() -> None:
    usage = Path(__file__).parent / "typing" / "usage.py"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(usage)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
