"""Serving the project: the multi-process web server (``python -m clearing.server.webserver``) and
the ASGI handler that runs Django's synchronous request path on a fixed pool of threads."""
