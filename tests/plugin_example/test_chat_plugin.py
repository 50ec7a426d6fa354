"""A user's test suite on chatsdk's pytest plugin: no conftest.py, no fixture of its own.

tests/test_plugin.py copies this directory into an empty project and runs pytest there,
so that the fixtures come from the installed ``pytest11`` entry point as they would for
a user. It is kept out of the main run (``--ignore`` in pyproject.toml).
"""

import threading

import anyio
import pytest

import chatsdk
from chatsdk.server import Faults


@pytest.mark.anyio
async def test_chat_client_talks_to_chat_server(chat_server, chat_client):
    result = await chat_client.chat.create(integration_id="docs", messages="How do I retry?")
    assert result.text.startswith("Retries cover connection failures")
    assert result.citations[0].record.url == "https://chatsdk.dev/docs/retries"
    assert chat_server.base_url.startswith("http://127.0.0.1:")


@pytest.mark.anyio
@pytest.mark.chat_faults(drop_after_events=3, drop_times=1)
async def test_marker_faults_apply_from_the_start(chat_client):
    stream = chat_client.chat.create(integration_id="docs", messages="How do I retry?")
    result = await stream
    assert stream.resumes == 1 and result.text.startswith("Retries cover")


@pytest.mark.anyio
@pytest.mark.chat_faults(fail_first=1, fail_status=429, retry_after="0")
async def test_marker_error_status_reaches_the_caller(chat_client):
    with pytest.raises(chatsdk.RateLimitError):
        await chat_client.chat.create(integration_id="docs", messages="Hi", retries=0)
    assert (await chat_client.chat.create(integration_id="docs", messages="Hi")).text


@pytest.mark.anyio
async def test_faults_can_change_mid_test(chat_server, chat_client):
    chat_server.faults = Faults(event_delay=0.5)
    with anyio.move_on_after(0.2) as budget:
        await chat_client.chat.create(integration_id="docs", messages="How do I retry?")
    assert budget.cancelled_caught
    chat_server.faults = Faults()
    assert (await chat_client.chat.create(integration_id="docs", messages="Hi")).text


@pytest.mark.chat_faults(fail_first=1, retry_after="0")
def test_a_sync_test_uses_the_server_too(chat_server):
    with chatsdk.SyncChatClient(
        api_key=chat_server.api_key, project=chat_server.project, base_url=chat_server.base_url
    ) as client:
        assert (
            client.chat.create(integration_id="docs", messages="How do I retry?")
            .final_result()
            .text
        )


servers_seen = []


def test_each_test_gets_its_own_server(chat_server):
    servers_seen.append(chat_server.base_url)


def test_each_test_gets_its_own_server_again(chat_server):
    servers_seen.append(chat_server.base_url)
    assert len(set(servers_seen)) == 2


def test_no_server_thread_is_left_behind():
    assert not [t for t in threading.enumerate() if t.name == "chatsdk-reference-server"]
