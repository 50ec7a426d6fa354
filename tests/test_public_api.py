"""The public surface stays honest: __all__ is complete, and usage examples type-check."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from multidict import CIMultiDict

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


MISUSE = """
import chatsdk

def misuse(url: str) -> None:
    print(chatsdk.AuthenticatoinError)
    with chatsdk.SyncChatClient("key", project="demo", base_ur=url) as client:
        client.chat.completions.create(modle="m", messages="q")
        client.tokens.create(embed_origin=5)
        client.chat.continue_("s", integration_id="d", mesage="q")
"""


def test_misuse_is_caught_by_mypy_strict(tmp_path: Path) -> None:
    # Misspelled names on the module and misspelled or mistyped arguments to the sync
    # facade are type errors (the module has a runtime __getattr__; the facade forwards).
    misuse = tmp_path / "misuse.py"
    misuse.write_text(MISUSE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(misuse)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    flagged = {int(line.split(":")[1]) for line in result.stdout.splitlines() if ": error:" in line}
    assert flagged == {5, 6, 7, 8, 9}, result.stdout


# -- one error boundary: nothing untyped leaves the client -------------------------------

CLIENT_MODULES = sorted(
    path
    for path in (Path(chatsdk.__file__).parent).glob("*.py")
    if path.name not in ("cli.py", "_demo.py", "testing.py", "__main__.py")
)
# Raised by the iteration protocols and module __getattr__, or for the impossible.
# SystemExit: a daemon thread's call when interpreter exit closed its client (sync.py).
PROTOCOL = {"StopIteration", "StopAsyncIteration", "AttributeError", "AssertionError", "SystemExit"}
ERRORS = {
    name
    for name, value in vars(chatsdk.errors).items()
    if inspect.isclass(value) and issubclass(value, chatsdk.ChatSDKError)
}


def _raise_sites(path: Path) -> list[tuple[int, str, ast.expr | None]]:
    tree = ast.parse(path.read_text())
    functions = {
        node.name: node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    sites = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue  # a bare `raise` re-raises what an except clause caught
        exc = node.exc
        target = exc.func if isinstance(exc, ast.Call) else exc
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if isinstance(exc, ast.Call) and name in functions:
            # A helper that builds the error: its return annotation says what it is.
            returns = functions[name].returns
            sites.append((node.lineno, name, returns))
        else:
            sites.append((node.lineno, name, None))
    return sites


@pytest.mark.parametrize("path", CLIENT_MODULES, ids=lambda p: p.name)
def test_every_raise_in_the_client_raises_a_chatsdk_error(path: Path) -> None:
    # Each `raise` of the client modules names a chatsdk error class, a helper annotated
    # to return one, or re-raises an error already caught and typed (self._error, cause).
    untyped = []
    for line, name, returns in _raise_sites(path):
        if returns is not None:
            shown = ast.unparse(returns)
            if not any(error in shown for error in ERRORS) and shown not in ("_E",):
                untyped.append(f"{path.name}:{line}: {name}() returns {shown}")
        elif name[:1].isupper() and name not in ERRORS | PROTOCOL:
            untyped.append(f"{path.name}:{line}: raise {name}")
    assert not untyped, "\n".join(untyped)


def test_dir_lists_the_public_names_and_no_import_of_the_module() -> None:
    names = dir(chatsdk)
    assert set(names) == set(chatsdk.__all__)
    assert {"SyncChatClient", "SyncChatStream"} <= set(names)  # lazy, listed all the same
    assert not {"Any", "TYPE_CHECKING", "annotations"} & set(names)


@pytest.mark.parametrize(
    "error",
    [
        chatsdk.RateLimitError(
            "slow down", status=429, body={"error": "x"}, request_id="r1", headers={"A": "1"}
        ),
        chatsdk.APIStatusError("teapot", status=418, body="short and stout"),
        chatsdk.APIResponseValidationError("not JSON", status=200, url="http://h/p", body="<"),
        chatsdk.APIError("an error chunk", body={"message": "boom"}),
        chatsdk.StreamError("cut", event="message", received=b"data: {"),
        chatsdk.APIConnectionError("refused"),
        chatsdk.ValidationError("bad"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_error_pickles_and_copies_whole(error: chatsdk.ChatSDKError) -> None:
    # A ProcessPoolExecutor hands a worker's exception back by pickling it: a required
    # keyword (status) broke that, and with it the pool (BrokenProcessPool).
    import copy
    import pickle

    error.__dict__["attempts"] = 3
    for twin in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(twin) is type(error)
        assert str(twin) == str(error) and twin.args == error.args
        assert twin.__dict__ == error.__dict__


def test_error_headers_are_case_insensitive_and_keep_repeats() -> None:
    error = chatsdk.APIStatusError(
        "x", status=500, headers=CIMultiDict([("Set-Cookie", "a"), ("set-cookie", "b")])
    )
    assert error.headers.getall("SET-COOKIE") == ["a", "b"]
    assert chatsdk.APIError("x", headers={"X-Request-Id": "r"}).headers["x-request-id"] == "r"
