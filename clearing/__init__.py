"""The clearing domain (underlyings, instruments, trades and positions) and the kernel every app
shares (``ledger``, ``validation``, ``signals``, ``events``, ``admin_mixins``, ``dashboard``,
``ops``). The Django project's configuration is ``clearing.config``, its web server
``clearing.server``."""
