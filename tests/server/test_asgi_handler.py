"""HTTP under ASGI runs Django's synchronous request path on a fixed pool of threads per process."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path

from clearing.server.asgi_handler import ThreadPoolASGIHandler

SLOW_SECONDS = 0.15


class Observed:
    lock = threading.Lock()
    running = 0
    most_at_once = 0
    threads: list[str] = []

    @classmethod
    def reset(cls) -> None:
        cls.running = cls.most_at_once = 0
        cls.threads = []


def where_am_i(request):
    Observed.threads.append(threading.current_thread().name)
    return HttpResponse(threading.current_thread().name)


def slow(request):
    with Observed.lock:
        Observed.running += 1
        Observed.most_at_once = max(Observed.most_at_once, Observed.running)
    time.sleep(SLOW_SECONDS)
    with Observed.lock:
        Observed.running -= 1
    return HttpResponse("done")


def middleware_and_view(request):
    return HttpResponse(f"{request.middleware_thread} {threading.current_thread().name}")


class RecordsItsThread:
    """A plain synchronous middleware (Django's async mode would run it through sync_to_async)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.middleware_thread = threading.current_thread().name
        return self.get_response(request)


urlpatterns = [path("where/", where_am_i), path("slow/", slow), path("both/", middleware_and_view)]


async def http_get(application, path_: str) -> tuple[int, bytes]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path_, "raw_path": path_.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }  # fmt: skip
    sent: list[dict] = []
    request_sent = False
    disconnect = asyncio.Event()

    async def receive():
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    disconnect.set()
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


@pytest.fixture
def observed():
    Observed.reset()
    with override_settings(ROOT_URLCONF=__name__):
        yield Observed


def test_requests_run_on_the_pools_long_lived_threads(observed):
    handler = ThreadPoolASGIHandler(threads=2)

    async def one_after_another():
        return [await http_get(handler, "/where/") for _ in range(6)]

    answers = asyncio.run(one_after_another())
    assert all(status == 200 for status, _ in answers)
    # Threads are reused, not made per request (so are their database and cache connections).
    assert set(observed.threads) <= {"http-0_0", "http-1_0"}


def test_no_more_requests_run_at_once_than_the_pool_has_threads_and_the_rest_wait_their_turn(observed):
    handler = ThreadPoolASGIHandler(threads=2)

    async def six_at_once():
        return await asyncio.gather(*(http_get(handler, "/slow/") for _ in range(6)))

    started = time.monotonic()
    answers = asyncio.run(six_at_once())
    elapsed = time.monotonic() - started
    assert [status for status, _ in answers] == [200] * 6
    assert observed.most_at_once == 2
    assert elapsed >= 3 * SLOW_SECONDS  # three rounds of two


def test_one_handler_serves_event_loop_after_event_loop(observed):
    """A server has one loop for its life, tests one per test: a busy queue in one must not tie
    the handler to that loop."""
    handler = ThreadPoolASGIHandler(threads=1)

    async def two_at_once():
        return await asyncio.gather(http_get(handler, "/slow/"), http_get(handler, "/slow/"))

    for _ in range(2):
        assert [status for status, _ in asyncio.run(two_at_once())] == [200, 200]


def test_the_middleware_chain_and_the_view_of_a_request_run_on_one_pool_thread(observed, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.RecordsItsThread"]
    handler = ThreadPoolASGIHandler(threads=1)
    status, body = asyncio.run(http_get(handler, "/both/"))
    assert status == 200
    assert body.decode() == "http-0_0 http-0_0"


def test_a_pool_without_threads_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        ThreadPoolASGIHandler(threads=0)
