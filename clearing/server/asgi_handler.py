"""Django's HTTP handling under ASGI on a fixed pool of request threads per web process.

Django's own ``ASGIHandler`` suits async views. Ours are synchronous (DRF, the admin, the pages),
and for them it pays three costs on every request that the WSGI deployment of the same code does
not (measured in docs/performance.md, "REST API"):

- **a new thread per request** (``ThreadSensitiveContext()``): every thread-local object —
  the database connection wrapper, the cache client and its Redis connection — is built again
  for each request and thrown away after it;
- **unbounded concurrency**: every request in flight gets its own thread, so under load dozens
  of CPU-bound requests fight over one GIL and each takes as long as all of them;
- **a hop between the event loop and the request thread for every middleware**: in async mode
  each ``MiddlewareMixin`` middleware runs ``process_request`` and ``process_response`` through
  ``sync_to_async`` (two hops each, fourteen per request with our stack).

``ThreadPoolASGIHandler`` keeps the ASGI protocol side of Django's handler (body reading,
disconnect detection, response sending, signals) and changes only where the synchronous work
runs: the whole request — middleware chain and view, exactly as Django's WSGI handler runs it —
goes in **one** hop to one of ``threads`` long-lived threads (asgiref's
``ThreadSensitiveContext(executor=...)``, so every thread-sensitive call of that request lands on
that thread). This is the shape of gunicorn's ``gthread`` worker: a request waiting for the
database holds one of a process's threads, others go on; beyond ``threads`` requests wait their
turn in arrival order. Scale with more processes (``WEB_CONCURRENCY``), on more machines.

Websockets do not come here (Channels routes them), and neither does the outbox relay, which has
its own thread (``frontend.relay``).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler


class ThreadPoolASGIHandler(ASGIHandler):
    """Serves HTTP through Django's synchronous request path on ``threads`` threads per process."""

    def __init__(self, *, threads: int) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        # Not ASGIHandler.__init__: it loads the middleware chain in async mode.
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self.threads = threads
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"http-{index}") for index in range(threads)
        ]
        self._free: asyncio.Queue[ThreadPoolExecutor] | None = None
        self._free_loop: asyncio.AbstractEventLoop | None = None

    def _free_executors(self) -> asyncio.Queue[ThreadPoolExecutor]:
        # Made inside the server's event loop on first use. A server has one loop for its life;
        # a new loop (tests run one per test) means the previous one has finished: start afresh.
        loop = asyncio.get_running_loop()
        if self._free is None or self._free_loop is not loop:
            self._free, self._free_loop = asyncio.Queue(), loop
            for executor in self._executors:
                self._free.put_nowait(executor)
        return self._free

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        free = self._free_executors()
        executor = await free.get()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            # If the client went away mid-request the view may still be running on this thread:
            # the next request given this executor simply queues behind it.
            free.put_nowait(executor)

    async def get_response_async(self, request):
        # The synchronous chain, in one hop to this request's thread (thread-sensitive: the
        # executor of the context entered above).
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
