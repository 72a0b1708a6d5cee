"""The Django project's configuration: settings, URLs, the ASGI/WSGI entry points and the Celery
application (``celery -A clearing.config``). The web server that serves it is ``clearing.server``."""

from clearing.config.celery import app as celery_app

__all__ = ("celery_app",)
