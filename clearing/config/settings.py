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

BASE_DIR = Path(__file__).resolve().parents[2]


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

ROOT_URLCONF = "clearing.config.urls"
ASGI_APPLICATION = "clearing.config.asgi.application"
# Threads per web process that run Django's synchronous request handling (clearing.server.asgi_handler):
# requests beyond it wait their turn. Scale with processes (WEB_CONCURRENCY), not threads: the
# API's work is CPU-bound and a process runs Python on one core at a time.
WEB_THREADS = env_int("WEB_THREADS", 4)
WSGI_APPLICATION = "clearing.config.wsgi.application"

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
# server's threads are a fixed pool (clearing.server.asgi_handler), so their number is bounded. A
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
        # kombu's filesystem transport with atomic writes and tolerant reads: a worker never reads
        # a half-written message (clearing.broker).
        CELERY_BROKER_TRANSPORT = "clearing.broker:Transport"
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
    # Nightly model validation of the active set (riskengine.validation): backtest and stress of
    # every member account in both modes, on the closes up to the day that just ended.
    "validation-nightly": {"task": "validation.nightly", "schedule": crontab(hour=0, minute=45)},
    # Starts a full margin sweep when the active parameter set's sweep_interval_seconds (default
    # 60) has passed since the last one; checking every few seconds keeps that interval governed.
    "sweeps-full-due": {"task": "sweeps.full_due", "schedule": 5.0},
    # API: stored Idempotency-Key outcomes are kept 24 h (clearing.api.idempotency.RETENTION).
    "api-idempotency-records-purge": {"task": "api.idempotency_records_purge", "schedule": crontab(minute=7)},
    # Custody: announced deposits past their TTL expire (appended steps; idempotent).
    "custody-deposits-expire": {"task": "custody.deposits_expire", "schedule": 60.0},
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
# Reverse proxies in front of the web server that append the client's address to X-Forwarded-For.
# 0 (the default): the connection's address is the client's and X-Forwarded-For is ignored (anyone
# can send it) — right when clients connect directly, or when uvicorn already resolved the address
# from the proxies it trusts (FORWARDED_ALLOW_IPS). Used for the anonymous throttle's key.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "clearing.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # drf-spectacular's, with every error answer and the Idempotency-Key rules (clearing.api.schema).
    "DEFAULT_SCHEMA_CLASS": "clearing.api.schema.ApiAutoSchema",
    # JSON only: one body format to validate strictly (the browsable API still renders).
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "clearing.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": [
        "clearing.api.throttling.UserRateThrottle",
        "clearing.api.throttling.AnonymousThrottle",
    ],
    # Per user (its tokens and its session together), per client address for anonymous calls and
    # refused credentials, and a lower per-user budget for the engine-running endpoints (what-if,
    # simulate); the API's counters live in CACHES (clearing.api.throttling).
    "DEFAULT_THROTTLE_RATES": {
        "user": env_str("API_THROTTLE_RATE", "1200/min"),
        "anon": env_str("API_ANON_THROTTLE_RATE", "60/min"),
        "compute": env_str("API_COMPUTE_THROTTLE_RATE", "120/min"),
    },
    # DRF's own reading of X-Forwarded-For, for anything that uses it; ours is
    # clearing.api.throttling.client_address, with the same setting.
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
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
            # Bounded waits: an unreachable Redis costs a request at most a second, and the API
            # throttle then fails open (clearing.api.throttling).
            "OPTIONS": {
                "pool_class": "clearing.cache.ProcessConnectionPool",
                "socket_connect_timeout": 1.0,
                "socket_timeout": 1.0,
            },
        }
    }
SPECTACULAR_SETTINGS = {
    "TITLE": "Clearing platform API",
    "DESCRIPTION": "Trades, collateral and prices in; margin, margin calls and liquidations out.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # A required text field refuses "" (DRF's allow_blank=False): the schema says so (minLength 1).
    "ENFORCE_NON_BLANK_FIELDS": True,
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

# --- Staff sign-in: second factor, login throttling, session length (accounts) ----------------
# Kept in one block: it edits the lists above rather than their literals.
#
# The admin site requires a verified TOTP device from staff when STAFF_OTP_REQUIRED
# (accounts.admin_site); it is always on in production and off by default in development so that
# `make run` and the demo sign in with a password alone.
INSTALLED_APPS[INSTALLED_APPS.index("django.contrib.admin")] = "accounts.apps.StaffAdminConfig"
INSTALLED_APPS += ["django_otp", "django_otp.plugins.otp_totp", "axes"]
_AUTH_MIDDLEWARE = MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware")
MIDDLEWARE[_AUTH_MIDDLEWARE + 1 : _AUTH_MIDDLEWARE + 1] = [
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified()
    # A staff session without a verified second factor counts as no session outside the sign-in
    # and enrolment pages (the API's session authentication and the member pages included).
    "accounts.middleware.StaffSecondFactorMiddleware",
]
MIDDLEWARE.append("axes.middleware.AxesMiddleware")  # last, as django-axes requires
# AxesStandaloneBackend refuses locked-out credentials before any password is checked; our own
# backend (a ModelBackend) then authenticates and adds the role permissions.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", *AUTHENTICATION_BACKENDS]

STAFF_OTP_REQUIRED = True if PRODUCTION else env_bool("STAFF_OTP_REQUIRED", False)
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "Clearing venue")
OTP_ADMIN_HIDE_SENSITIVE_DATA = True  # no TOTP secret is ever shown again after enrolment

# Staff sessions end 12 hours after sign-in whatever they do (accounts.signals); members keep
# Django's SESSION_COOKIE_AGE (two weeks).
STAFF_SESSION_SECONDS = env_int("STAFF_SESSION_SECONDS", 12 * 60 * 60)

# Login throttling on /login/ and /admin/login/ (django-axes). Failures are counted per username
# *and* client address: by username alone anyone could lock any user out (say, every risk
# approver, stalling the maker-checker, or a member during a margin call); by address alone
# everyone behind one NAT would share a lock. AXES_FAILURE_LIMIT failures in a row lock the pair
# out, even for the right password (not checked during a lock: it would tell a guesser when they
# are right); every further attempt during the lock doubles the cool-off (back-off), from
# LOGIN_COOLOFF_MINUTES up to LOGIN_COOLOFF_MAX_MINUTES (accounts.throttling). The client address
# is REMOTE_ADDR, which the web server already takes from the trusted proxy's X-Forwarded-For
# (FORWARDED_ALLOW_IPS).
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 6)
LOGIN_COOLOFF_MINUTES = env_int("LOGIN_COOLOFF_MINUTES", 15)
LOGIN_COOLOFF_MAX_MINUTES = env_int("LOGIN_COOLOFF_MAX_MINUTES", 24 * 60)
AXES_COOLOFF_TIME = "accounts.throttling.login_cool_off"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"

# --- Content-Security-Policy (django-csp 4) ----------------------------------------------------
# https://django-csp.readthedocs.io/ — every page (member app, admin, API docs) loads scripts,
# styles, images and fonts from our own origin only; nothing inline runs unless it carries the
# request's nonce (only the API docs page has such blocks: clearing/api/templates/api/). No inline
# style attributes either (the correlation grid colours its cells from its script file).
# ``connect-src 'self'`` covers the pages' fetch() calls and, in CSP level 3 browsers, the
# same-origin /ws/margin/ socket. Nothing may frame the pages, and forms post only to us.
from csp.constants import NONCE, NONE, SELF  # noqa: E402

INSTALLED_APPS += ["csp"]
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1, "csp.middleware.CSPMiddleware"
)
TEMPLATES[0]["OPTIONS"]["context_processors"].append("csp.context_processors.nonce")  # {{ CSP_NONCE }}
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [NONE],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "manifest-src": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [NONE],
        "object-src": [NONE],
    }
}
if env_str("DJANGO_CSP_REPORT_URI"):
    # Where browsers report what the policy blocked (a collector of your choice).
    CONTENT_SECURITY_POLICY["DIRECTIVES"]["report-uri"] = [env_str("DJANGO_CSP_REPORT_URI")]

# --- Platform ---------------------------------------------------------------------------------
# The settlement currency: realised P&L, option premiums and fees are booked in this asset.
SETTLEMENT_ASSET = "USD"
# Margin sweeps (riskengine.sweeps): accounts per shard of a full sweep; the liquidation fee paid
# to the insurance fund, as a fraction of the notional closed; how long event-sweep requests wait
# to be coalesced before one engine run takes them all (0: only requests already pending coalesce).
CLEARING_SWEEP_SHARD_SIZE = env_int("CLEARING_SWEEP_SHARD_SIZE", 5000)
CLEARING_LIQUIDATION_FEE_RATE = env_str("CLEARING_LIQUIDATION_FEE_RATE", "0.005")
CLEARING_EVENT_SWEEP_DELAY_SECONDS = float(env_str("CLEARING_EVENT_SWEEP_DELAY_SECONDS", "0.05"))
# Model validation (riskengine.validation): member accounts per shard of a backtest-and-stress run;
# a proposal on a venue of at most CLEARING_VALIDATION_SYNC_ACCOUNTS member accounts is validated
# while it is proposed (a larger venue's on the workers, and approval waits for it); a run still
# running this many hours after it started is failed (a shard lost for good); the per-account
# results of the newest CLEARING_VALIDATION_KEEP_RUNS nightly or on-demand runs of each mode are
# kept (older runs keep their venue results only).
CLEARING_VALIDATION_SHARD_SIZE = env_int("CLEARING_VALIDATION_SHARD_SIZE", 5000)
CLEARING_VALIDATION_SYNC_ACCOUNTS = env_int("CLEARING_VALIDATION_SYNC_ACCOUNTS", 2000)
CLEARING_VALIDATION_RUN_HOURS = env_int("CLEARING_VALIDATION_RUN_HOURS", 6)
CLEARING_VALIDATION_KEEP_RUNS = env_int("CLEARING_VALIDATION_KEEP_RUNS", 7)
# Custody (accounts.custody): an announced deposit the custodian has not confirmed within this
# many seconds expires (the TTL is stamped on the announcement, so changing it never revives or
# expires existing ones). The demo custody (development only, ``make run`` turns it on) confirms
# announced deposits and sends requested withdrawals once they are this many seconds old, acting
# as the ``custody`` user through the same services.
CUSTODY_DEPOSIT_TTL_SECONDS = env_int("CUSTODY_DEPOSIT_TTL_SECONDS", 24 * 3600)
CUSTODY_DEMO_AUTOCONFIRM = env_bool("CUSTODY_DEMO_AUTOCONFIRM", False) and not PRODUCTION
CUSTODY_DEMO_DELAY_SECONDS = float(env_str("CUSTODY_DEMO_DELAY_SECONDS", "3"))
if CUSTODY_DEMO_AUTOCONFIRM:
    # The demo custody, only where it is switched on (never in production, see above).
    CELERY_BEAT_SCHEDULE["custody-demo-process"] = {"task": "custody.demo_process", "schedule": 2.0}
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

# =================================================================================================
# Operations: surviving crashes, outages and late messages (issue #13, docs/operations.md).
# One block, after everything it adjusts, so that parallel edits above merge cleanly.
# =================================================================================================
from clearing.ops.database import database_timeouts_apply  # noqa: E402  (pure; imports no Django)

# Retention, the insurance-fund guard, stuck-work recovery and the metrics live in clearing.ops.
INSTALLED_APPS += ["clearing.ops"]

# Margin snapshots are kept at full resolution for this many hours, then only those referenced by
# current margin, calls, call events and liquidations plus each account's daily close
# (clearing.ops.retention). Two hours: the account page charts its last 120 snapshots.
CLEARING_SNAPSHOT_RETENTION_HOURS = float(env_str("CLEARING_SNAPSHOT_RETENTION_HOURS", "2"))

# --- PostgreSQL timeouts (seconds; 0 turns one off) ---------------------------------------------
# Web requests and management commands: no request is worth more than 15 s of one statement, and
# a request waiting for an account lock (held by an event sweep or a liquidation for well under a
# second, bench/bench_tasks.py) gives up after 5 s with an error instead of holding one of the
# process's WEB_THREADS. Migrations on big tables may need more: docker/bin/release turns both off.
DATABASE_STATEMENT_TIMEOUT = float(env_str("DATABASE_STATEMENT_TIMEOUT", "15"))
DATABASE_LOCK_TIMEOUT = float(env_str("DATABASE_LOCK_TIMEOUT", "5"))
# Celery workers (applied by clearing.config.celery when a worker starts): the longest statement of a
# task is a shard's COPY and upsert (≈ 0.1 s for 5,000 accounts idle, a few seconds for 25,000 on
# a loaded machine) or a retention batch; 60 s is far above that and below every soft time limit
# below, so a stuck statement fails the task (and is retried) before the worker is killed. Lock
# waits (shards upserting current margins behind an event sweep, liquidations behind a sweep's
# account locks) are retried by the tasks after lock_timeout.
DATABASE_WORKER_STATEMENT_TIMEOUT = float(env_str("DATABASE_WORKER_STATEMENT_TIMEOUT", "60"))
DATABASE_WORKER_LOCK_TIMEOUT = float(env_str("DATABASE_WORKER_LOCK_TIMEOUT", "30"))
database_timeouts_apply(
    databases=DATABASES, statement_timeout=DATABASE_STATEMENT_TIMEOUT, lock_timeout=DATABASE_LOCK_TIMEOUT
)

# --- Celery: time limits, redelivery, acknowledgement -------------------------------------------
# Measured with bench/bench_tasks.py (20,000 accounts of 10 positions, 2 shared vCPUs, load
# 2.5–4; docs/operations.md "Time limits"): a shard of 5,000 accounts 0.33–0.92 s, a liquidation
# ≤ 0.26 s (median 0.09–0.18 s), a drain of 5,000 event-sweep requests 0.56–1.12 s, creating a full
# sweep ≤ 0.10 s, the daily calibration ≤ 0.13 s. docs/performance.md saw the same work 8× slower on a
# machine at load 7–9, and CLEARING_SWEEP_SHARD_SIZE may be raised to 25,000 (5× a shard): the
# worst plausible shard is ≈ 25 s. Each soft limit is ≥ 4× its task's worst plausible run and
# raises SoftTimeLimitExceeded inside the task (its transaction rolls back, the shard is marked
# failed, the next full sweep covers its accounts); the hard limit kills the process 30 s later.
# A task killed at its hard limit is acknowledged, not redelivered (task_acks_on_timeout), so a
# task that always overruns cannot loop.
CELERY_TASK_SOFT_TIME_LIMIT = 60  # every task not named below
CELERY_TASK_TIME_LIMIT = 90
CELERY_TASK_ANNOTATIONS = {
    "sweeps.shard": {"soft_time_limit": 120, "time_limit": 150},
    # A drain takes at most DRAIN_BATCHES_PER_TASK batches of 5,000, then sends itself again.
    "sweeps.requests_drain": {"soft_time_limit": 120, "time_limit": 150},
    "sweeps.full_due": {"soft_time_limit": 120, "time_limit": 150},
    "sweeps.liquidation_execute": {"soft_time_limit": 60, "time_limit": 90},
    # At most riskengine.sweeps.foresight.TASK_ACCOUNTS (200) accounts, ≈ 0.1-0.2 s each.
    "sweeps.foresight": {"soft_time_limit": 120, "time_limit": 150},
    "ops.margin_snapshots_prune": {"soft_time_limit": 120, "time_limit": 150},
    # A validation shard of 5,000 accounts backtests each over the whole history (≈ 10 s on a
    # loaded core, docs/performance.md), and the one that completes its run adds the aggregate
    # book (≈ 1 s); 150 s leaves > 10× room; hard limit + the longest retry countdown (60 s) stays
    # below the broker's visibility timeout (300 s).
    "validation.shard": {"soft_time_limit": 150, "time_limit": 180},
    # Not idempotent (each run proposes a new parameter set): at most once. A lost run is
    # repeated by hand or by the next day's beat.
    "marketdata.calibrate": {
        "soft_time_limit": 120,
        "time_limit": 150,
        "acks_late": False,
        "reject_on_worker_lost": False,
    },
}
CELERY_TASK_ACKS_ON_FAILURE = True
CELERY_TASK_ACKS_ON_TIMEOUT = True
# Redis hands an unacknowledged message (its worker died, its host vanished) to another worker
# once it has been out for visibility_timeout (kombu's default is an hour). It must exceed the
# longest a message can legitimately stay unacknowledged: the largest hard time limit (150 s)
# plus the longest countdown a task is sent with (retry back-off ≤ 60 s); 300 s. Every worker
# scans for such messages every unacked_restore_interval (10 s) when the throttle is 1 (default:
# every 10th interval), so a lost task runs again within ≈ 310 s.
# Environment override only for fault drills and the fault-injection tests' own workers, which
# need a lost message back in seconds (tests/sweeps/test_faults.py); production keeps 300 s.
BROKER_VISIBILITY_TIMEOUT = env_int("BROKER_VISIBILITY_TIMEOUT", 300)  # ours, read into the options below
if CELERY_BROKER_URL.startswith(("redis://", "rediss://", "sentinel://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": BROKER_VISIBILITY_TIMEOUT,
        "unacked_restore_throttle": 1,
        # A publish on a connection whose peer vanished without a reset (failover, NAT) fails
        # after 10 s instead of hanging the request or task that sends it.
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
    }
# A task whose acknowledgement can no longer reach the broker will be delivered again; cancelling
# it when the connection drops keeps two copies from running at once (tasks are idempotent).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True

# --- Metrics (clearing.ops.metrics) --------------------------------------------------------------
# Scrapes of /metrics (and of a worker's WORKER_METRICS_PORT) must send "Authorization: Bearer
# <METRICS_TOKEN>". Without a token the endpoint is off in production (404) and answers loopback
# only in development. Per-process counters need PROMETHEUS_MULTIPROC_DIR in the environment
# (docker/bin/web and docker/bin/worker set it): read at import, so it is no Django setting.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)  # 0: a worker serves no metrics
WORKER_METRICS_ADDR = env_str("WORKER_METRICS_ADDR", "0.0.0.0")
if PRODUCTION:
    # Prometheus scrapes from the private network over plain HTTP, like the health probe.
    SECURE_REDIRECT_EXEMPT = [*SECURE_REDIRECT_EXEMPT, r"^metrics$"]

# --- Periodic upkeep (beat) ---------------------------------------------------------------------
CELERY_BEAT_SCHEDULE.update(
    {
        # The outbox is pruned here, not by the relays (which run only while sockets are open).
        "frontend-outbox-prune": {"task": "frontend.outbox_prune", "schedule": 60.0},
        # Margin snapshots beyond the retention policy, in bounded batches.
        "ops-margin-snapshots-prune": {"task": "ops.margin_snapshots_prune", "schedule": 60.0},
        # The insurance fund against its governed floor, at current prices (also checked after
        # every liquidation and full sweep).
        "ops-insurance-fund-check": {"task": "ops.insurance_fund_check", "schedule": 60.0},
        # Liquidations whose task was lost (broker down when it was sent) are sent again.
        "ops-liquidations-resume": {"task": "ops.liquidations_resume", "schedule": 60.0},
        # Shards not done past the shard's hard limit + the longest retry countdown (210 s) are
        # sent again from the database's state; sweeps that cannot complete expire, with an alert.
        "ops-sweeps-recover": {"task": "ops.sweeps_recover", "schedule": 60.0},
    }
)
# --- Automated agents (agents, docs/agents.md) -----------------------------------------------------
# Band policies (collateral moved between a member's funding account and its margin accounts) and
# hedge policies (trades proposed, or requested through signed webhooks). The app sits between the
# sweeps, which announce their figures, and the API.
INSTALLED_APPS.insert(INSTALLED_APPS.index("clearing.api"), "agents")
# Webhook endpoints must be https:// (plain http only to this machine, for development and tests).
WEBHOOK_REQUIRE_HTTPS = PRODUCTION or env_bool("WEBHOOK_REQUIRE_HTTPS", False)
# Whether an endpoint may be, or resolve to, an address outside the public internet (loopback,
# private ranges): never in production, where that would let a member make the venue call its own
# internal services.
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = not PRODUCTION and env_bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", True)
# Fernet keys (comma-separated, newest first) that encrypt endpoint secrets at rest; every key
# decrypts, the first encrypts, so a key is rotated by putting a new one first. Empty: one key
# derived from DJANGO_SECRET_KEY (agents.crypto). Generate one with
# `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.
WEBHOOK_SECRET_KEYS = env_list("WEBHOOK_SECRET_KEYS", [])
# One delivery attempt waits this long for an answer; failed attempts are retried after 30 s,
# 1 min, 2 min… (doubling, at most an hour apart) until WEBHOOK_RETRY_HOURS after the request.
WEBHOOK_TIMEOUT_SECONDS = float(env_str("WEBHOOK_TIMEOUT_SECONDS", "10"))
WEBHOOK_RETRY_BASE_SECONDS = env_int("WEBHOOK_RETRY_BASE_SECONDS", 30)
WEBHOOK_RETRY_MAX_SECONDS = env_int("WEBHOOK_RETRY_MAX_SECONDS", 3600)
WEBHOOK_RETRY_HOURS = env_int("WEBHOOK_RETRY_HOURS", 24)
# An egress proxy for webhook deliveries (http://proxy:3128); unset: direct, whatever the
# environment's http_proxy says.
WEBHOOK_PROXY = env_str("WEBHOOK_PROXY", "")
CELERY_TASK_ANNOTATIONS.update(
    {
        # One engine run or two per policy of a handful of accounts.
        "agents.accounts_act": {"soft_time_limit": 60, "time_limit": 90},
        # One HTTP attempt (WEBHOOK_TIMEOUT_SECONDS) and two short transactions; below the claim
        # (agents.webhooks.CLAIM_SECONDS) so a killed attempt's claim lapses after it.
        "agents.webhook_deliver": {"soft_time_limit": 30, "time_limit": 40},
    }
)
# The API schema names the agents' "mode" and "status" choices apart from the others of those names
# (the parameter sets' status keeps the name it had).
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {}).update(
    {
        "HedgeModeEnum": "agents.models.HedgeMode",
        "HedgeStatusEnum": "agents.models.HedgeStatus",
        "StatusEnum": "riskengine.models.ParameterStatus",
    }
)
# Deliveries due again after their back-off, or whose first task was lost.
CELERY_BEAT_SCHEDULE["agents-webhooks-due"] = {"task": "agents.webhooks_due", "schedule": 15.0}

# A periodic tick that waited in the queue for more than a minute (or its period, if longer)
# expires: its next tick does the same work. After a worker outage, beat's backlog (12
# sweeps.full_due a minute…) is dropped instead of run in a row.
for _entry in CELERY_BEAT_SCHEDULE.values():
    _period = _entry["schedule"] if isinstance(_entry["schedule"], float) else 3600.0
    _entry.setdefault("options", {}).setdefault("expires", max(_period, 60.0))
del _entry, _period
