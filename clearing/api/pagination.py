from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    """``?limit=&offset=``; a client cannot ask for more than ``max_limit`` rows at once."""

    default_limit = 50
    max_limit = 500
