"""CI runs against real PostgreSQL and Redis: a missing service must fail the suite, not skip it."""

import os

import redis
from django.conf import settings
from django.db import connection


def test_the_suite_runs_on_postgresql_when_a_database_url_says_so(db):
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        assert connection.vendor == "postgresql"
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)


def test_the_redis_broker_and_channel_layer_are_used_and_reachable_when_configured():
    if os.environ.get("REDIS_URL"):
        assert settings.CELERY_BROKER_URL.startswith("redis://")
        assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
        assert redis.Redis.from_url(settings.REDIS_URL).ping() is True
