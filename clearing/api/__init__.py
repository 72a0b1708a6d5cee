"""The REST API (``/api/v1/``) for members' back offices, the trading venue and price feeds."""
