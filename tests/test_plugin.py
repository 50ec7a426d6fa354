"""The pytest plugin (chatsdk/testing.py), loaded through its installed entry point.

Each test makes a small project of its own in a temporary directory (no conftest.py) and
runs pytest there in a subprocess, as a user's project would be run.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent / "plugin_example"


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "pytest.ini").write_text("[pytest]\n")  # the project's own, empty config
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def pytest_in(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATSDK_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def defined_tests(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    ]


def test_the_example_suite_passes_on_the_installed_plugin(tmp_path: Path) -> None:
    root = project(tmp_path, {})
    shutil.copytree(EXAMPLE, root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    assert not list(root.rglob("conftest.py"))
    done = pytest_in(root, "-q", "tests")
    tests = defined_tests(EXAMPLE / "test_chat_plugin.py")
    assert len(tests) >= 7
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"^{len(tests)} passed in ", done.stdout, re.M), done.stdout


def test_the_fixtures_and_marker_are_registered(tmp_path: Path) -> None:
    root = project(tmp_path, {"test_x.py": "def test_x():\n    pass\n"})
    fixtures = pytest_in(root, "--fixtures", "-q")
    assert fixtures.returncode == 0, fixtures.stderr
    assert "chat_server" in fixtures.stdout and "chat_client" in fixtures.stdout
    markers = pytest_in(root, "--markers")
    assert "@pytest.mark.chat_faults(**fields)" in markers.stdout
    off = pytest_in(root, "--fixtures", "-q", "-p", "no:chatsdk")
    assert off.returncode == 0 and "chat_server" not in off.stdout


def test_a_misspelt_fault_fails_the_test_clearly(tmp_path: Path) -> None:
    test = (
        "import pytest\n\n"
        "@pytest.mark.chat_faults(drop_after=3)\n"
        "def test_drop(chat_server):\n"
        "    pass\n"
    )
    root = project(tmp_path, {"test_drop.py": test})
    done = pytest_in(root, "-q")
    assert done.returncode == 1
    assert "1 error" in done.stdout
    assert "@pytest.mark.chat_faults takes Faults fields as keywords; unknown: drop_after;" in (
        done.stdout
    )
    assert "drop_after_events" in done.stdout and "Traceback" not in done.stdout


def test_a_project_not_using_it_pays_nothing(tmp_path: Path) -> None:
    test = (
        "import sys, threading\n\n"
        "def test_plain():\n"
        "    assert 'chatsdk.testing' in sys.modules  # loaded by its entry point\n"
        "    assert 'chatsdk.server' not in sys.modules\n"
        "    assert not [t for t in threading.enumerate() if t.name.startswith('chatsdk')]\n"
    )
    root = project(tmp_path, {"test_plain.py": test})
    done = pytest_in(root, "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_import_chatsdk_does_not_load_the_plugin() -> None:
    code = (
        "import sys, chatsdk\n"
        "assert 'chatsdk.testing' not in sys.modules and 'pytest' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
