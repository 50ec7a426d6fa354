"""The reference server against its OpenAPI 3.1 document, fuzzed with schemathesis.

``GET /openapi.json`` describes the token operations, both chat wires under every path
the real services use (``/v0``, ``/v1``) and the resume ``GET``: nine operations. Two bounded
schemathesis runs (a few hundred requests, a few seconds) send generated bodies, query
values and headers to a live server in a thread:

- with valid credentials, so that bodies and the optional headers reach validation
  and the answers (streams included) are checked against the document;
- with generated credentials (random ``Gram-Key``, ``Authorization``,
  ``Gram-Chat-Session`` ...), so that the authentication paths are fuzzed.

Either run fails on any 5xx, on a status, content type, header or body the document does
not allow, and on a schema-violating request that is accepted. The
``positive_data_acceptance`` check is left out: the document cannot say everything the
server checks (the last message must be the user's; ``expires_after: 60.0`` is an
integer to JSON Schema but not to the server).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from chatsdk.server import Faults, ReferenceServer
from chatsdk.server.app import create_app
from chatsdk.server.openapi import OPENAPI

KEY = "fuzz-test-api-key-0123456789"
PROJECT = "demo"
AUTH = {"Gram-Key": KEY, "Gram-Project": PROJECT, "Authorization": f"Bearer {KEY}"}
# Generated cases per operation and run (plus the valid run's boundary-value "coverage"
# phase): some 700 requests in all, a few seconds. CHATSDK_FUZZ_EXAMPLES=500 makes a
# longer run (docs/RELIABILITY.md).
EXAMPLES = int(os.environ.get("CHATSDK_FUZZ_EXAMPLES", "15"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests on every run: `make test` stays reproducible
    suppress_health_check=list(HealthCheck),
)

with_valid_credentials = schemathesis.openapi.from_dict(
    OPENAPI,
    config=schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}}),
)
# Fuzzing only: the coverage phase's boundary values mostly meet a 401 here.
with_generated_credentials = schemathesis.openapi.from_dict(
    OPENAPI, config=schemathesis.Config.from_dict({"phases": {"coverage": {"enabled": False}}})
)

STATUSES: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module")
def live() -> Iterator[ReferenceServer]:
    with ReferenceServer(api_key=KEY, project=PROJECT).serve_in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def known(live: ReferenceServer) -> dict[str, str]:
    """A real session, result ids (of both wires) and client token, so that continue,
    resume and revoke can succeed too."""
    body = {
        "integration_id": "docs",
        "chat_session": {"messages": [{"role": "user", "content": "How do I retry?"}]},
        "stream": True,
    }
    request = urllib.request.Request(
        live.base_url + "/chat_sessions/chat_results",
        data=json.dumps(body).encode(),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        location = resp.headers["Content-Location"]
        first = resp.read().split(b"\n\n")[0]
    data = json.loads(first.split(b"data: ", 1)[1])
    completion = {"model": "inkeep-qa-expert", "messages": [{"role": "user", "content": "Hi"}]}
    request = urllib.request.Request(
        live.base_url + "/chat/completions",
        data=json.dumps({**completion, "stream": True}).encode(),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        completion_location = resp.headers["Content-Location"]
        assert resp.read().endswith(b"data: [DONE]\n\n")
    request = urllib.request.Request(
        live.base_url + "/rpc/chatSessions.create",
        data=b'{"embed_origin": "https://docs.example.com"}',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        token = json.loads(resp.read())["client_token"]
    return {
        "chat_session_id": data["chat_session_id"],
        "result_id": location.split("/")[-2],
        "completion_result_id": completion_location.split("/")[-2],
        "token": token,
    }


def use_known_ids(case: Any, known: dict[str, str]) -> None:
    """Point about half of the cases at a real session, result (of either wire) or token."""
    for parameters in (case.path_parameters, case.query):
        for name, value in (parameters or {}).items():
            if name in known and len(str(value)) % 2 == 0:
                wire = "completion_" if name == "result_id" and len(str(value)) % 4 else ""
                parameters[name] = known[wire + name]


def tally(ctx: Any, response: Any, case: Any) -> bool | None:
    """A check that only counts what each operation answered."""
    STATUSES[(case.operation.label, response.status_code)] += 1
    return None


def get_json(url: str) -> tuple[int, str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.headers.get_content_type(), json.loads(resp.read())


def test_openapi_document_is_served_and_is_not_an_api_call(live: ReferenceServer) -> None:
    live.faults = Faults(fail_first=5)  # documentation routes never fail on purpose
    try:
        status, content_type, document = get_json(live.base_url + "/openapi.json")
    finally:
        live.faults = Faults()
    assert status == 200 and content_type == "application/json"
    assert document == json.loads(json.dumps(OPENAPI))
    assert document["openapi"].startswith("3.1")


def test_openapi_document_describes_exactly_the_api_routes(live: ReferenceServer) -> None:
    app = create_app(live)
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "OPTIONS")
    }
    routes -= {("GET", "/healthz"), ("GET", "/openapi.json")}
    documented = {
        (method.upper(), path) for path, item in OPENAPI["paths"].items() for method in item
    }
    assert documented == routes
    assert (
        len({op["operationId"] for item in OPENAPI["paths"].values() for op in item.values()}) == 9
    )


def test_openapi_document_is_valid_openapi_3_1() -> None:
    # schemathesis validates the document against the OpenAPI 3.1 meta-schema on load.
    schema = schemathesis.openapi.from_dict(OPENAPI)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9


@with_valid_credentials.parametrize()
@FUZZ_SETTINGS
def test_fuzz_bodies_and_headers_with_valid_credentials(
    case: Any, live: ReferenceServer, known: dict[str, str]
) -> None:
    use_known_ids(case, known)
    case.call_and_validate(
        base_url=live.base_url,
        headers=AUTH,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[tally],
        timeout=10,
    )


@with_generated_credentials.parametrize()
@FUZZ_SETTINGS
def test_fuzz_credentials_and_headers(case: Any, live: ReferenceServer) -> None:
    case.call_and_validate(
        base_url=live.base_url,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[tally],
        timeout=10,
    )


def test_zz_the_fuzz_reached_every_kind_of_answer() -> None:
    """The runs above were not all refused at the door: each operation was answered with
    success at least once, and validation and authentication failures were both seen."""
    if not STATUSES:
        pytest.skip("the fuzz tests did not run in this session")
    by_operation: dict[str, set[int]] = {}
    for (operation, status), _ in STATUSES.items():
        by_operation.setdefault(operation, set()).add(status)
    print(f"\nschemathesis: {sum(STATUSES.values())} requests, {EXAMPLES} examples/operation")
    for operation, statuses in sorted(by_operation.items()):
        print(f"  {operation}: {sorted(statuses)}")
    assert len(by_operation) == 9, by_operation
    assert all(all(s < 500 for s in statuses) for statuses in by_operation.values())
    successes = {op for op, statuses in by_operation.items() if statuses & {200, 204}}
    assert len(successes) == 9, by_operation
    seen = set().union(*by_operation.values())
    assert {401, 422}.issubset(seen), seen
