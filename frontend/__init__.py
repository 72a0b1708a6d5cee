"""Member pages, websocket consumers and static files."""
