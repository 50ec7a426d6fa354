"""Every ```python block of README.md and docs/*.md runs, so the docs cannot rot.

The blocks of one file run in order, in one namespace, with top-level ``await`` allowed,
against a reference server (on a thread of its own) whose address, API key and project are
pre-defined as ``URL``, ``KEY`` and ``PROJECT``. Blocks without ``await`` run as plain
synchronous code, outside any event loop (so the sync client works there too); the others
run on one event loop kept for the whole file. A block preceded by ``<!-- skip -->`` is not
run (kept for things that cannot run here).

Blocks may define pytest fixtures and tests, as a user's conftest.py would: afterwards,
every ``test_*`` function the file defined runs with its fixtures (function scope, set up
and torn down around it), and every fixture no test used is set up and torn down once.

``sh`` blocks are not run; the ``chatsdk`` command lines in them are checked against
``chatsdk <command> --help``, and every ``examples/`` path the docs name must exist.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import inspect
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import chatsdk
from chatsdk.server import ReferenceServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KEY = "docs-test-key"
PROJECT = "demo"
SKIP_MARK = "<!-- skip -->"
# The skip mark is for the rare block that cannot run; more than this per file is rot.
MAX_SKIPPED_PER_FILE = 2

_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # of the block's first code line, 1-based
    lang: str
    code: str
    skip: bool

    def compile(self) -> Any:
        # Padding keeps the line numbers of tracebacks those of the Markdown file.
        source = "\n" * (self.line - 1) + self.code
        return compile(
            source, str(self.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )


def blocks_of(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1].strip()
        line = text.count("\n", 0, match.start("code")) + 1
        found.append(
            Block(path, line, match["lang"].lower(), match["code"], skip=before == SKIP_MARK)
        )
    return found


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


# -- fixtures and tests defined by the docs ---------------------------------------------------


def fixture_function(value: object) -> Callable[..., Any] | None:
    """The function behind a ``@pytest.fixture`` object, or None if ``value`` is not one."""
    unwrap = getattr(value, "_get_wrapped_function", None)  # pytest >= 8.4
    if callable(unwrap) and hasattr(value, "_fixture_function_marker"):
        function: Callable[..., Any] = unwrap()
        return function
    if hasattr(value, "_pytestfixturefunction") and callable(value):  # older pytest
        inner: Callable[..., Any] = getattr(value, "__wrapped__", value)
        return inner
    return None


class DocFixtures:
    """Function-scoped fixture values for one test, resolved by parameter name like pytest."""

    def __init__(
        self,
        runner: asyncio.Runner,
        fixtures: dict[str, Callable[..., Any]],
        builtin: dict[str, Any],
    ):
        self._runner = runner
        self._fixtures = fixtures
        self._values = dict(builtin)
        self._teardowns: list[Callable[[], None]] = []
        self.used: set[str] = set()

    def call(self, function: Callable[..., Any]) -> Any:
        """Call ``function`` with its parameters' fixtures; await it if it is async."""
        kwargs = {name: self.value(name) for name in inspect.signature(function).parameters}
        result = function(**kwargs)
        if inspect.isasyncgen(result):
            value = self._runner.run(anext(result))
            self._teardowns.append(lambda: self._runner.run(_exhaust_async(result)))
            return value
        if inspect.isgenerator(result):
            value = next(result)
            self._teardowns.append(lambda: _exhaust(result))
            return value
        if inspect.iscoroutine(result):
            return self._runner.run(result)
        return result

    def value(self, name: str) -> Any:
        if name not in self._values:
            if name not in self._fixtures:
                raise LookupError(f"the docs use a fixture they do not define: {name!r}")
            self.used.add(name)
            self._values[name] = self.call(self._fixtures[name])
        return self._values[name]

    def teardown(self) -> None:
        while self._teardowns:
            self._teardowns.pop()()


def _exhaust(generator: Iterator[Any]) -> None:
    for _ in generator:
        raise AssertionError("a fixture must yield once")


async def _exhaust_async(generator: Any) -> None:
    async for _ in generator:
        raise AssertionError("a fixture must yield once")


def run_defined_tests(
    namespace: dict[str, Any], runner: asyncio.Runner, builtin: dict[str, Any]
) -> list[str]:
    """Run the doc's ``test_*`` functions, then its fixtures no test used; their names."""
    fixtures = {
        name: function
        for name, value in namespace.items()
        if (function := fixture_function(value)) is not None
    }
    tests = {
        name: value
        for name, value in namespace.items()
        if name.startswith("test_") and inspect.isfunction(value)
    }
    used: set[str] = set()
    for function in tests.values():
        resolver = DocFixtures(runner, fixtures, builtin)
        try:
            resolver.call(function)
        finally:
            resolver.teardown()
        used |= resolver.used
    for name in fixtures.keys() - used:
        resolver = DocFixtures(runner, fixtures, builtin)
        try:
            resolver.value(name)
        finally:
            resolver.teardown()
    return [*tests, *fixtures]


# -- the tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_server() -> Iterator[ReferenceServer]:
    with ReferenceServer(api_key=KEY, project=PROJECT).serve_in_thread() as server:
        yield server


# docs/testing.md is a test module for the pytest plugin: pytest runs it (below).
TESTING_MD = ROOT / "docs" / "testing.md"


@pytest.mark.parametrize("path", [d for d in DOCS if d != TESTING_MD], ids=doc_id)
def test_python_blocks_run(path: Path, reference_server: ReferenceServer, tmp_path: Path) -> None:
    blocks = [b for b in blocks_of(path) if b.lang in ("python", "py")]
    assert blocks, f"{doc_id(path)} has no Python example"
    assert sum(b.skip for b in blocks) <= MAX_SKIPPED_PER_FILE
    namespace: dict[str, Any] = {
        "__name__": f"docs_{path.stem.lower()}",
        "URL": reference_server.base_url,
        "KEY": KEY,
        "PROJECT": PROJECT,
    }
    with asyncio.Runner() as runner:
        try:
            for block in blocks:
                if block.skip:
                    continue
                code = block.compile()
                if code.co_flags & inspect.CO_COROUTINE:
                    runner.run(eval(code, namespace))
                else:
                    exec(code, namespace)
            run_defined_tests(namespace, runner, {"tmp_path": tmp_path})
            unclosed = [
                name
                for name, value in namespace.items()
                if isinstance(value, chatsdk.ChatClient) and not value._transport._closed
            ]
            assert not unclosed, f"{doc_id(path)} leaves clients open: {unclosed}"
        finally:
            for value in list(namespace.values()):
                if isinstance(value, chatsdk.ChatClient):
                    runner.run(value.aclose())


# -- pasted into `python -m asyncio` -----------------------------------------------------------

# The interactive console ends a compound statement only at a blank line: a block whose
# indented part is followed directly by a top-level line (`try:`, `print(...)`) runs as a
# file but is a SyntaxError when pasted. So every block is also pasted, line by line, into
# a real asyncio REPL, which is what the README tells readers to do.
_MARK = "@@pasted block at line "
_ERROR_LINE = re.compile(
    r"^(Traceback \(most recent call last\)|\s*File \"<stdin>\"|"
    r"\w*(Error|Exception|Exit|Interrupt)\b[:\s])",
    re.M,
)


def paste_into_repl(blocks: list[Block], env: dict[str, str]) -> dict[int, str]:
    """Paste ``blocks`` into one ``python -m asyncio`` session; the output after each block."""
    lines = [f"URL, KEY, PROJECT = {env['URL']!r}, {env['KEY']!r}, {env['PROJECT']!r}", ""]
    for block in blocks:
        lines += block.code.splitlines()
        # The reader presses Enter after pasting, ending a trailing compound statement.
        lines += ["", f"print({_MARK + str(block.line)!r})", ""]
    done = subprocess.run(
        [sys.executable, "-u", "-m", "asyncio"],
        input="\n".join(lines) + "\n",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    outputs: dict[int, str] = {}
    rest = done.stdout
    for block in blocks:
        mark = _MARK + str(block.line)
        before, found, rest = rest.partition(mark + "\n")
        assert found, f"the REPL never got past the block at line {block.line}:\n{before[-3000:]}"
        outputs[block.line] = before
    return outputs


# Blocks of pages owned elsewhere that have a blank line inside a compound statement (the
# console ends the statement there). Listed so that the check runs on every other block
# now and fails the moment one of these is fixed, so the entry is removed with the fix.
KNOWN_PASTE_FAILURES: dict[str, set[int]] = {}


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_python_blocks_paste_into_the_asyncio_repl(
    path: Path, reference_server: ReferenceServer
) -> None:
    blocks = [b for b in blocks_of(path) if b.lang in ("python", "py") and not b.skip]
    env = {"URL": reference_server.base_url, "KEY": KEY, "PROJECT": PROJECT}
    outputs = paste_into_repl(blocks, env)
    known = KNOWN_PASTE_FAILURES.get(doc_id(path), set())
    for line, output in outputs.items():
        error = _ERROR_LINE.search(output)
        if line in known:
            assert error, f"{doc_id(path)}:{line} pastes now: remove it from KNOWN_PASTE_FAILURES"
            continue
        assert error is None, f"{doc_id(path)}:{line}: pasting this block fails:\n{output}"


def test_the_repl_paste_check_catches_a_missing_blank_line(
    reference_server: ReferenceServer,
) -> None:
    """The README's old revoke block: runs as a file, a SyntaxError when pasted."""
    code = "async with chatsdk.ChatClient(api_key=KEY, project=PROJECT, base_url=URL) as c:\n"
    code += "    pass\nprint('after')\n"
    block = Block(ROOT / "README.md", 1, "python", "import chatsdk\n" + code, skip=False)
    compile(block.code, "<block>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    env = {"URL": reference_server.base_url, "KEY": KEY, "PROJECT": PROJECT}
    output = paste_into_repl([block], env)[1]
    assert "SyntaxError" in output and _ERROR_LINE.search(output)


def test_testing_md_runs_as_a_test_module_on_the_plugin(tmp_path: Path) -> None:
    """docs/testing.md's blocks, as one test file of a project without a conftest.py, pass
    under pytest with the fixtures of the installed plugin (its pytest11 entry point)."""
    blocks = [b for b in blocks_of(TESTING_MD) if b.lang == "python" and not b.skip]
    source = ""
    for block in blocks:  # each block at its own line, so failures point into the page
        source += "\n" * (block.line - 1 - source.count("\n")) + block.code
    defined = [
        node.name
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    ]
    assert len(defined) >= 8
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_testing_md.py").write_text(source)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_testing_md.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"^{len(defined)} passed in ", done.stdout, re.M), done.stdout


# -- setup: what `make` installed, and how to use it ----------------------------------------


def test_readme_says_how_to_use_the_venv_before_using_it() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    activate = text.find(". .venv/bin/activate")
    assert activate != -1 and "pip install -e ." in text
    for use in ("chatsdk serve", "python examples/", "chatsdk chat"):
        assert activate < text.find(use), f"README uses {use!r} before saying how"


def test_activating_the_venv_puts_chatsdk_on_path(tmp_path: Path) -> None:
    activate = Path(sys.prefix) / "bin" / "activate"
    assert activate.exists(), activate
    script = f". {shlex.quote(str(activate))} && chatsdk --version && python -c 'import chatsdk'"
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # not the checkout: the installed package must be found
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("chatsdk ")


def make_dry_run(root: Path, target: str) -> str:
    done = subprocess.run(
        ["make", "-n", target], cwd=root, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_demo_installs_only_what_the_demo_needs_and_make_test_upgrades(
    tmp_path: Path,
) -> None:
    for name in ("Makefile", "pyproject.toml"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    fresh = make_dry_run(tmp_path, "demo")
    assert "-m venv .venv" in fresh and "install -e ." in fresh and "[dev]" not in fresh
    assert "install -e '.[dev]'" in make_dry_run(tmp_path, "test")

    # After `make demo`: the venv and the demo stamp exist, newer than pyproject.toml.
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    (tmp_path / ".venv" / ".installed-demo").touch()
    assert "-m pip" not in make_dry_run(tmp_path, "demo")
    upgrade = make_dry_run(tmp_path, "test")
    assert "install -e '.[dev]'" in upgrade and "-m venv" not in upgrade

    # After `make test`: both stamps are fresh, neither target installs anything.
    (tmp_path / ".venv" / ".installed").touch()
    assert "-m pip" not in make_dry_run(tmp_path, "demo")
    assert "-m pip" not in make_dry_run(tmp_path, "test")


# -- counts quoted by the docs --------------------------------------------------------------

# A figure the docs state about the test suite goes stale as tests are added, so each one is
# recomputed here. Measurements of dated runs (the tables of benchmark and fuzz runs) are
# records, not claims about today's suite, and are not matched by these phrasings.
_COUNTED = re.compile(
    r"\b(\d[\d,]*) (tests|cases|commands|failing calls|statements)\b", re.IGNORECASE
)


@functools.cache
def collected(*files: str) -> list[str]:
    """The test ids pytest collects from ``files`` (parametrized cases counted one by one)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if "::" in line]


def _hardening_source() -> str:
    return (ROOT / "tests" / "test_hardening.py").read_text(encoding="utf-8")


def _tests_in_hardening_part(number: int) -> int:
    """Collected tests defined in section ``# == N.`` of tests/test_hardening.py."""
    source = _hardening_source()
    lines = source.splitlines()
    starts = [i + 1 for i, text in enumerate(lines) if text.startswith("# == ")]
    begin = next(i for i in starts if lines[i - 1].startswith(f"# == {number}."))
    end = min([i for i in starts if i > begin] + [len(lines) + 1])
    names = {
        node.name
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and begin < node.lineno < end
    }
    ids = collected(*_reliability_files())  # one collection serves every count
    return sum(
        1
        for i in ids
        if i.startswith("tests/test_hardening.py::") and i.split("::")[1].split("[")[0] in names
    )


def _cli_commands_in_the_secrets_test() -> int:
    tree = ast.parse(_hardening_source())
    test = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "test_cli_output_never_shows_a_secret"
    )
    return sum(
        1
        for node in ast.walk(test)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "run"
    )


def _failing_calls_in_the_secrets_test() -> int:
    found = re.findall(r"assert len\(evidence\.errors\) == (\d+)", _hardening_source())
    assert len(found) == 1
    return int(found[0])


def _sql_statements() -> int:
    calls = 0
    for path in sorted((ROOT / "chatsdk" / "server").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"execute", "executemany", "executescript"}
            ):
                calls += 1
    return calls


def _reliability_files() -> tuple[str, ...]:
    """The test files of the command below ``# N tests`` in docs/RELIABILITY.md."""
    text = (ROOT / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    command = re.search(r"^# \d+ tests, .*\n(.*pytest.*)$", text, re.M)
    assert command, "docs/RELIABILITY.md: the counted command is gone"
    files = tuple(w for w in shlex.split(command.group(1)) if w.startswith("tests/"))
    assert "tests/test_hardening.py" in files
    return files


def _reliability_suite() -> int:
    return len(collected(*_reliability_files()))


# (the phrase around the figure, how to compute the real figure)
QUOTED_COUNTS: dict[str, list[tuple[str, Callable[[], int]]]] = {
    "docs/RELIABILITY.md": [
        (r"^# (\d+) tests, ", _reliability_suite),
        (r"\*\*Measured\.\*\* (\d+) cases\.", lambda: _tests_in_hardening_part(1)),
        (r"then (\d+) failing calls", _failing_calls_in_the_secrets_test),
        (r"through (\d+) commands", _cli_commands_in_the_secrets_test),
        (r"every one of the (\d+) statements", _sql_statements),
    ],
}


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_counts_the_docs_quote_are_current(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    checks = QUOTED_COUNTS.get(doc_id(path), [])
    checked: set[int] = set()
    for pattern, actual in checks:
        found = list(re.finditer(pattern, text, re.M))
        assert len(found) == 1, f"{doc_id(path)}: {pattern!r} matches {len(found)} times"
        quoted = int(found[0].group(1).replace(",", ""))
        line = text.count("\n", 0, found[0].start()) + 1
        real = actual()
        assert quoted == real, f"{doc_id(path)}:{line} says {quoted}, it is {real} now: update it"
        checked.add(found[0].start(1))
    unchecked = [
        f"{doc_id(path)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
        for m in _COUNTED.finditer(text)
        if m.start(1) not in checked
    ]
    assert not unchecked, f"counts no test checks (add them to QUOTED_COUNTS): {unchecked}"


# -- shell blocks ----------------------------------------------------------------------------

_COMMANDS_WITH_SUBCOMMANDS = {"token"}


def chatsdk_command_lines() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOCS:
        for block in blocks_of(path):
            if block.lang not in ("sh", "bash", "console", "shell"):
                continue
            for line in block.code.splitlines():
                words = shlex.split(line, comments=True)
                if words[:1] == ["chatsdk"]:
                    found.append((f"{doc_id(path)}:{block.line}", words[1:]))
    return found


def test_chatsdk_command_lines_in_the_docs_are_accepted() -> None:
    lines = chatsdk_command_lines()
    assert lines, "the docs show no chatsdk command line"
    helps: dict[tuple[str, ...], str] = {}
    for where, words in lines:
        command = tuple(words[:2] if words[0] in _COMMANDS_WITH_SUBCOMMANDS else words[:1])
        if command not in helps:
            done = subprocess.run(
                [sys.executable, "-m", "chatsdk", *command, "--help"],
                capture_output=True,
                text=True,
                timeout=30,
                cwd=ROOT,
            )
            assert done.returncode == 0, f"{where}: chatsdk {' '.join(command)}: {done.stderr}"
            helps[command] = done.stdout
        for option in (w.split("=", 1)[0] for w in words if w.startswith("--")):
            assert option in helps[command], f"{where}: chatsdk {command} has no {option}"


def test_example_paths_named_in_the_docs_exist() -> None:
    for path in DOCS:
        for name in re.findall(r"examples/[\w./-]*\w", path.read_text(encoding="utf-8")):
            assert (ROOT / name).exists(), f"{doc_id(path)} names {name}, which does not exist"
