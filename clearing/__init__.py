"""The Django project (settings, URLs, ASGI, Celery) and the clearing domain:
underlyings, instruments, trades and positions."""

from clearing.celery import app as celery_app

__all__ = ("celery_app",)
