"""Fault drill: the channel layer's Redis restarts between two margin calls; is either lost?

    redis-server --port 6390 --save '' --appendonly no --daemonize yes --pidfile /tmp/redis-6390.pid
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/clearing_tasks_bench \\
      .venv/bin/python -m bench.fault_relay_redis_restart --port 6390 --pidfile /tmp/redis-6390.pid

A relay and a listener share a ``channels_redis`` layer on that Redis. One ``margin_call.opened``
is relayed; Redis is then stopped and started again (the layer's pooled connections are now
stale), a second event is published and the relay runs its normal loop. Before at-least-once
delivery the send on the stale connection failed after the row was marked relayed: the event was
gone. Now the failed send releases the row and a later round delivers it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clearing.config.settings")

import django

django.setup()

from asgiref.sync import sync_to_async  # noqa: E402
from channels_redis.core import RedisChannelLayer  # noqa: E402

from clearing.events import events_publish  # noqa: E402
from frontend.relay import OutboxRelay, outbox_claim  # noqa: E402


def redis_restart(port: int, pidfile: str) -> None:
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], check=False)
    time.sleep(0.5)
    subprocess.run(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--daemonize", "yes",
         "--pidfile", pidfile],
        check=True,
    )  # fmt: skip
    time.sleep(0.5)


async def main(port: int, pidfile: str) -> None:
    while await sync_to_async(outbox_claim)():  # start from an empty outbox
        pass
    hosts = [f"redis://127.0.0.1:{port}/1"]
    layer = RedisChannelLayer(hosts=hosts)  # the relay's: its connections go stale in the restart
    channel = await layer.new_channel()
    await layer.group_add("account-900001", channel)
    relay = OutboxRelay()
    import frontend.relay

    frontend.relay.get_channel_layer = lambda: layer
    received: list[int] = []
    try:
        await sync_to_async(events_publish)(events=[(900001, "margin_call.opened", {"call": 1})])
        assert await relay.run_once() == 1
        received += [e["call"] for e in (await layer.receive(channel))["events"]]
        await asyncio.to_thread(redis_restart, port, pidfile)
        # The restart emptied Redis: the listener joins again through a fresh layer, so that the
        # relay's layer meets its stale connections on its own send.
        listener = RedisChannelLayer(hosts=hosts)
        channel = await listener.new_channel()
        await listener.group_add("account-900001", channel)
        await sync_to_async(events_publish)(events=[(900001, "margin_call.opened", {"call": 2})])
        failures = frontend.relay.RELAY_SEND_FAILURES._value.get()
        loop = asyncio.get_running_loop().create_task(relay.run())  # the relay's own loop and retries
        started = time.monotonic()
        try:
            message = await asyncio.wait_for(listener.receive(channel), timeout=30)
            received += [e["call"] for e in message["events"]]
        finally:
            loop.cancel()
        failed = frontend.relay.RELAY_SEND_FAILURES._value.get() - failures
        print(f"received calls {received}: the second {time.monotonic() - started:.2f} s after it was "
              f"published, across the Redis restart, after {failed:.0f} failed send(s)")  # fmt: skip
    finally:
        await relay.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=6390)
    parser.add_argument("--pidfile", default="/tmp/redis-6390.pid")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.pidfile))
