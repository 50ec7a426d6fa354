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

import pytest

EXAMPLE = Path(__file__).resolve().parent / "plugin_example"
pytest_plugins = ["pytester"]


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


# In-process runs (pytester) are quicker; the entry point is loaded all the same.


def test_the_fixtures_and_marker_are_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    fixtures = pytester.runpytest("--fixtures", "-q")
    assert fixtures.ret == 0
    listed = fixtures.stdout.str()
    assert "chat_server" in listed and "chat_client" in listed
    markers = pytester.runpytest("--markers")
    assert "@pytest.mark.chat_faults(**fields)" in markers.stdout.str()
    off = pytester.runpytest("--fixtures", "-q", "-p", "no:chatsdk")
    assert off.ret == 0 and "chat_server" not in off.stdout.str()


def test_a_misspelt_fault_fails_the_test_clearly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_drop="""
        import pytest

        @pytest.mark.chat_faults(drop_after=3)
        def test_drop(chat_server):
            pass

        @pytest.mark.chat_faults(drop_times="x")
        def test_wrong_type(chat_server):
            pass
        """
    )
    result = pytester.runpytest("-q")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert "@pytest.mark.chat_faults takes Faults fields as keywords; unknown: drop_after;" in out
    assert "drop_after_events" in out and "Traceback" not in out
    assert "@pytest.mark.chat_faults: Expected `int | null`, got `str` - at `$.drop_times`" in out


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
