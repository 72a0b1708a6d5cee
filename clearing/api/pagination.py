from rest_framework import exceptions
from rest_framework.pagination import LimitOffsetPagination


class Pagination(LimitOffsetPagination):
    """``?limit=&offset=``; a client cannot ask for more than ``max_limit`` rows at once (a larger
    limit is capped). Malformed values — not a whole number, a limit below 1, a negative offset,
    the parameter given twice — are refused with ``400`` naming the parameter, as any bad input
    is, instead of silently falling back to the first page."""

    default_limit = 50
    max_limit = 500

    @staticmethod
    def _whole_number(request, name: str, *, minimum: int) -> int | None:
        params = request.query_params
        values = (
            params.getlist(name) if hasattr(params, "getlist") else [params[name]] if name in params else []
        )
        if not values:
            return None
        if len(values) > 1:
            raise exceptions.ValidationError({name: ["Give it once."]})
        value = values[0]
        if not (value.isascii() and value.isdigit()) or int(value) < minimum:
            raise exceptions.ValidationError({name: [f"Must be a whole number of at least {minimum}."]})
        return int(value)

    def get_limit(self, request) -> int:
        limit = self._whole_number(request, self.limit_query_param, minimum=1)
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request) -> int:
        offset = self._whole_number(request, self.offset_query_param, minimum=0)
        return offset or 0

    def get_schema_operation_parameters(self, view):
        limit, offset = super().get_schema_operation_parameters(view)
        limit["schema"] = {"type": "integer", "minimum": 1}
        limit["description"] = (
            f"Rows per page, {self.default_limit} by default; more than {self.max_limit} is capped."
        )
        offset["schema"] = {"type": "integer", "minimum": 0}
        offset["description"] = "How many rows to skip."
        return [limit, offset]
