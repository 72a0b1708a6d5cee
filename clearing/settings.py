"""Settings for the clearing platform, read from the environment (12-factor).

Two shapes, one code base:

* embedded (the default, what ``make run`` uses): SQLite in WAL mode, Celery over kombu's
  ``filesystem://`` transport and an in-process channel layer fed by the transactional outbox;
  no server needed.
* service: set ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL`` and the same code runs on
  PostgreSQL, a Redis Celery broker and the Redis channel layer.

``DJANGO_ENV=production`` switches on the deployment hardening checked by ``check --deploy``.
Every variable is listed in README.md ("Configuration").
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value in (None, "") else value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DJANGO_ENV = env_str("DJANGO_ENV", "development")
if DJANGO_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("DJANGO_ENV must be 'development' or 'production'")
PRODUCTION = DJANGO_ENV == "production"

# Local state of the embedded stack (SQLite file, filesystem broker, collected static files).
VAR_DIR = Path(env_str("CLEARING_VAR_DIR", str(BASE_DIR / "var")))

if PRODUCTION:
    SECRET_KEY = env_str("DJANGO_SECRET_KEY")
    if not SECRET_KEY:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when DJANGO_ENV=production")
    DEBUG = False
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS is required when DJANGO_ENV=production")
else:
    SECRET_KEY = env_str("DJANGO_SECRET_KEY", "insecure-development-key-never-use-in-production")
    DEBUG = env_bool("DJANGO_DEBUG", True)
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])

CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc served from our static files, not a CDN
    "channels",
    "accounts",
    "clearing",
    "riskengine",
    "riskengine.sweeps",
    "clearing.marketdata",
    "clearing.api",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "clearing.urls"
ASGI_APPLICATION = "clearing.asgi.application"
# Threads per web process that run Django's synchronous request handling (clearing.asgi_handler):
# requests beyond it wait their turn. Scale with processes (WEB_CONCURRENCY), not threads: the
# API's work is CPU-bound and a process runs Python on one core at a time.
WEB_THREADS = env_int("WEB_THREADS", 4)
WSGI_APPLICATION = "clearing.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# https://github.com/jazzband/dj-database-url
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'clearing.sqlite3'}")
# Persistent connections (DATABASE_CONN_MAX_AGE seconds) are kept per request thread; the web
# server's threads are a fixed pool (clearing.asgi_handler), so their number is bounded. A
# connection the database dropped is noticed at the start of the next request, not mid-way.
DATABASE_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 0)
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=DATABASE_CONN_MAX_AGE, conn_health_checks=DATABASE_CONN_MAX_AGE > 0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server, the worker and beat read while one of them writes; IMMEDIATE
    # transactions take the write lock up front so concurrent writers queue instead of failing
    # with "database is locked" half-way through a transaction.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-clearing.sqlite3")}
elif env_int("DATABASE_POOL_MAX_SIZE", 0) > 0:
    # Optional: a psycopg pool per process shares at most this many connections among the
    # process's threads (https://docs.djangoproject.com/en/5.2/ref/databases/#connection-pool),
    # for deployments with more threads than the database should see connections. Requests wait
    # for a free connection beyond the maximum.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_int("DATABASE_POOL_MAX_SIZE", 0),
        "timeout": 10,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["accounts.backends.RolePermissionBackend"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "frontend:overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Redis, Celery and the channel layer -------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")

# https://docs.celeryq.dev/en/stable/userguide/configuration.html
if REDIS_URL:
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
else:
    BROKER_DIR = VAR_DIR / "broker"
    CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
    if CELERY_BROKER_URL == "filesystem://":
        # Producer and consumer share one folder; a short polling interval keeps event sweeps
        # snappy (the default of 1 s would add up to a second of latency to every task).
        CELERY_BROKER_TRANSPORT_OPTIONS = {
            "data_folder_in": str(BROKER_DIR),
            "data_folder_out": str(BROKER_DIR),
            "processed_folder": str(BROKER_DIR / "processed"),
            "control_folder": str(BROKER_DIR / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        }
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# A worker killed mid-task must lose nothing: acknowledge after the task ran, hand the message
# back when the worker process dies, and take one message at a time.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict = {
    # Approved risk parameter sets take effect at their effective time (riskengine.services).
    "riskengine-parameter-sets-activate-due": {
        "task": "riskengine.tasks.parameter_sets_activate_due",
        "schedule": 15.0,
    },
    # The oracle records symbols whose sources went quiet as stale (and alerts ops).
    "marketdata-refresh": {"task": "marketdata.refresh", "schedule": 10.0},
    # Daily recalibration of psr and correlations: proposed, never applied automatically.
    # Runs after the UTC day's close is recorded.
    "marketdata-calibrate": {"task": "marketdata.calibrate", "schedule": crontab(hour=0, minute=15)},
    # Starts a full margin sweep when the active parameter set's sweep_interval_seconds (default
    # 60) has passed since the last one; checking every few seconds keeps that interval governed.
    "sweeps-full-due": {"task": "sweeps.full_due", "schedule": 5.0},
    # API: stored Idempotency-Key outcomes are kept 24 h (clearing.api.idempotency.RETENTION).
    "api-idempotency-records-purge": {"task": "api.idempotency_records_purge", "schedule": crontab(minute=7)},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# https://channels.readthedocs.io/en/stable/topics/channel_layers.html
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 1500, "expiry": 60},
        }
    }
else:
    # The embedded stack has one web process; workers reach it through the outbox table, never
    # through this layer directly. The default capacity of 100 silently drops bursts.
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 5000}}
    }

# --- REST framework ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # JSON only: one body format to validate strictly (the browsable API still renders).
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "clearing.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": [
        "clearing.api.throttling.TokenRateThrottle",
        "clearing.api.throttling.AnonymousThrottle",
    ],
    # Per token (or session user) and per anonymous address; the API's counters live in CACHES.
    "DEFAULT_THROTTLE_RATES": {
        "token": env_str("API_THROTTLE_RATE", "1200/min"),
        "anon": env_str("API_ANON_THROTTLE_RATE", "60/min"),
    },
    "EXCEPTION_HANDLER": "clearing.api.errors.exception_handler",
}
# Shared by every web process when Redis is there (API throttling counters); per process otherwise.
# https://docs.djangoproject.com/en/5.2/topics/cache/#redis
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Cache objects are per request context: share the process's connections.
            "OPTIONS": {"pool_class": "clearing.cache.ProcessConnectionPool"},
        }
    }
SPECTACULAR_SETTINGS = {
    "TITLE": "Clearing platform API",
    "DESCRIPTION": "Trades, collateral and prices in; margin, margin calls and liquidations out.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/docs/ loads nothing from third-party hosts (drf-spectacular-sidecar's static files).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Security ---------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the web app's small scripts read it for fetch() POSTs
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    # TLS is terminated by the reverse proxy in front of the web containers.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # probes from inside the private network speak plain HTTP
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)

# --- Platform ---------------------------------------------------------------------------------
# The settlement currency: realised P&L, option premiums and fees are booked in this asset.
SETTLEMENT_ASSET = "USD"
# Margin sweeps (riskengine.sweeps): accounts per shard of a full sweep; the liquidation fee paid
# to the insurance fund, as a fraction of the notional closed; how long event-sweep requests wait
# to be coalesced before one engine run takes them all (0: only requests already pending coalesce).
CLEARING_SWEEP_SHARD_SIZE = env_int("CLEARING_SWEEP_SHARD_SIZE", 5000)
CLEARING_LIQUIDATION_FEE_RATE = env_str("CLEARING_LIQUIDATION_FEE_RATE", "0.005")
CLEARING_EVENT_SWEEP_DELAY_SECONDS = float(env_str("CLEARING_EVENT_SWEEP_DELAY_SECONDS", "0.05"))
# Real daily history shipped with the repository (see clearing/data/prices/README.md).
PRICE_HISTORY_DIR = Path(
    env_str("CLEARING_PRICE_HISTORY_DIR", str(BASE_DIR / "clearing" / "data" / "prices"))
)

# --- Strict input and bounded cost (fail closed, issue #12) ---------------------------------------
# The largest request body, bytes (Django's own setting, stated here: the API answers a larger
# body with a JSON 413 naming it, clearing.api.parsers).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
# Every API body goes through the strict parser (depth ≤ 400, no repeated key, no NaN literal).
REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] = ["clearing.api.parsers.StrictJSONParser"]
# Size bounds of a margin document sent to POST /api/v1/margin/simulate/ (riskengine.core's
# DocumentLimits; price_steps ≤ 50 is the methodology's own rule): beyond them, a 400 naming the field.
CLEARING_SIMULATE_LIMITS = {
    "portfolios": env_int("CLEARING_SIMULATE_MAX_PORTFOLIOS", 1000),
    "positions": env_int("CLEARING_SIMULATE_MAX_POSITIONS", 10_000),
    "instruments": env_int("CLEARING_SIMULATE_MAX_INSTRUMENTS", 2_000),
    "underlyings": env_int("CLEARING_SIMULATE_MAX_UNDERLYINGS", 50),
    "assets": env_int("CLEARING_SIMULATE_MAX_ASSETS", 50),
    "haircut_brackets": env_int("CLEARING_SIMULATE_MAX_HAIRCUT_BRACKETS", 20),
    "extreme_moves": env_int("CLEARING_SIMULATE_MAX_EXTREME_MOVES", 20),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
