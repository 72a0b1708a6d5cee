"""The suite runs on the services its environment names: PostgreSQL and Redis when ``DATABASE_URL``
and ``REDIS_URL`` say so (a missing service fails the suite, never skips it), the embedded stack
(SQLite, the filesystem broker, the in-process channel layer) when they are unset. Either way each
test asserts which one is in use, so neither passes without its services."""

import os

import redis
from django.conf import settings
from django.db import connection


def test_the_database_is_the_one_database_url_names_and_it_answers(db):
    url = os.environ.get("DATABASE_URL", "")
    assert connection.vendor == ("postgresql" if url.startswith("postgres") else "sqlite")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_the_broker_and_channel_layer_are_redis_when_redis_url_is_set_and_embedded_otherwise():
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if os.environ.get("REDIS_URL"):
        assert settings.CELERY_BROKER_URL.startswith("redis://")
        assert backend == "channels_redis.core.RedisChannelLayer"
        assert redis.Redis.from_url(settings.REDIS_URL).ping() is True
    else:
        assert settings.CELERY_BROKER_URL == "filesystem://"
        assert backend == "channels.layers.InMemoryChannelLayer"
