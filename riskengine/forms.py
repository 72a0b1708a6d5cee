"""Admin forms for parameter sets: the correlation grid, haircut brackets and scan parameters.

Validation here is the engine's own (``riskengine.core.params``: ``check_scalars``,
``check_underlying``, ``check_correlation``, ``check_haircut_brackets``), so the ops user gets
the methodology's refusal at once, on the field it concerns (a psr whose extreme move would take
the price below zero is an error on ``psr``); ``parameter_set_propose``, approval and activation
run the engine's whole validation again. Numbers typed into a form are plain ASCII decimals
(``clearing.validation.decimal_plain``; surrounding spaces are trimmed, as forms do).
"""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
from django import forms
from django.core.exceptions import ValidationError

from clearing.validation import decimal_plain
from riskengine.core.errors import DocumentError
from riskengine.core.params import (
    UNDERLYING_FIELDS,
    check_correlation,
    check_haircut_brackets,
    check_scalars,
    check_underlying,
    nearest_correlation,
)
from riskengine.core.parsing import read_number
from riskengine.models import HaircutBracket, ParameterSet, UnderlyingParameters

ACCEPT_NEAREST = "correlation__accept_nearest"


def correlation_project(correlation: dict, underlyings: list[str]) -> dict:
    """``correlation`` re-ordered to ``underlyings``: entries of dropped underlyings go, new ones get
    zero correlation. A principal sub-matrix of a PSD matrix is PSD, and adding uncorrelated
    underlyings keeps it PSD, so a valid matrix stays valid."""
    listed = list(correlation.get("underlyings") or [])
    matrix = correlation.get("matrix") or []
    index = {name: k for k, name in enumerate(listed)}

    def cell(a: str, b: str):
        if a == b:
            return 1.0
        if a in index and b in index:
            try:
                return matrix[index[a]][index[b]]
            except (IndexError, TypeError):
                return 0.0
        return 0.0

    return {
        "underlyings": list(underlyings),
        "matrix": [[cell(a, b) for b in underlyings] for a in underlyings],
    }


def _colour(value) -> str:
    """A cell's background: red for positive, blue for negative correlation, stronger as |ρ| → 1
    (static/riskengine/correlation.js uses the same rule while editing)."""
    try:
        rho = max(-1.0, min(1.0, float(value)))
    except (TypeError, ValueError):
        return "#fff3cd"
    if math.isnan(rho):
        return "#fff3cd"
    alpha = round(0.08 + 0.5 * abs(rho), 3)
    return f"rgba(200, 40, 40, {alpha})" if rho >= 0 else f"rgba(40, 80, 200, {alpha})"


class CorrelationGridWidget(forms.Widget):
    """An n×n grid of inputs; editing a cell edits its mirror, cells are coloured by value.

    Posts ``<name>__u`` (the underlyings, in order) and ``<name>__<i>__<j>`` for the upper triangle.
    When the submitted matrix is invalid, the field sets ``suggestion`` (the nearest valid matrix)
    and the grid offers a button that saves it (``ACCEPT_NEAREST``).
    """

    template_name = "riskengine/widgets/correlation.html"

    class Media:
        js = ("riskengine/correlation.js",)
        css = {"all": ("riskengine/admin.css",)}

    def __init__(self, attrs=None):
        super().__init__(attrs)
        self.suggestion: list[list[float]] | None = None

    def value_from_datadict(self, data, files, name):
        underlyings = data.getlist(f"{name}__u") if hasattr(data, "getlist") else data.get(f"{name}__u", [])
        if not underlyings and name in data:  # a JSON value, e.g. from a test or the API
            return data[name]
        n = len(underlyings)
        matrix = [[1.0 if i == j else None for j in range(n)] for i in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                raw = (data.get(f"{name}__{i}__{j}") or "").strip()
                matrix[i][j] = matrix[j][i] = raw
        value = {"underlyings": list(underlyings), "matrix": matrix}
        if data.get(ACCEPT_NEAREST):
            try:
                numeric = np.asarray([[float(v) for v in row] for row in matrix], dtype=np.float64)
            except ValueError:
                return value  # not numbers: the field reports which cell
            value["matrix"] = np.round(nearest_correlation(numeric), 6).tolist()
        return value

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        value = value if isinstance(value, dict) else {}
        underlyings = list(value.get("underlyings") or [])
        matrix = value.get("matrix") or []
        rows = []
        for i, row_name in enumerate(underlyings):
            cells = []
            for j in range(len(underlyings)):
                try:
                    cell = matrix[i][j]
                except (IndexError, TypeError):
                    cell = ""
                cells.append(
                    {
                        "i": i,
                        "j": j,
                        "column": underlyings[j],
                        "value": cell,
                        "name": f"{name}__{min(i, j)}__{max(i, j)}",
                        "diagonal": i == j,
                        "primary": i < j,
                        "colour": _colour(cell),
                    }
                )
            rows.append({"name": row_name, "cells": cells})
        suggestion = None
        if self.suggestion is not None:
            suggestion = [
                {"name": underlyings[i], "cells": [{"value": f"{v:.6f}", "colour": _colour(v)} for v in row]}
                for i, row in enumerate(self.suggestion)
            ]
        context["grid"] = {
            "underlyings": underlyings,
            "rows": rows,
            "suggestion": suggestion,
            "accept_name": ACCEPT_NEAREST,
            "disabled": bool(attrs and attrs.get("disabled")),
        }
        return context


class CorrelationField(forms.Field):
    """The correlation form of the margin document, validated like the engine does: numbers,
    symmetric, unit diagonal, |ρ| ≤ 1 and positive semi-definite. When only PSD-ness (or |ρ| ≤ 1)
    fails, the nearest valid matrix (Higham) is offered."""

    widget = CorrelationGridWidget

    def clean(self, value):
        value = super().clean(value)
        if not isinstance(value, dict) or "matrix" not in value:
            raise ValidationError("A correlation matrix is required.")
        underlyings = list(value.get("underlyings") or [])
        rows = value["matrix"]
        matrix = []
        for i, row in enumerate(rows):
            numbers = []
            for j, cell in enumerate(row):
                try:
                    numbers.append(read_number(cell, f"{underlyings[i]}/{underlyings[j]}"))
                except DocumentError as error:
                    raise ValidationError(f"{error.field}: {error.message}.") from None
            matrix.append(numbers)
        problems = [
            f"{underlyings[i]}/{underlyings[j]}: |ρ| = {abs(matrix[i][j]):g} exceeds 1"
            for i in range(len(matrix))
            for j in range(i + 1, len(matrix))
            if abs(matrix[i][j]) > 1
        ]
        try:
            if problems:
                raise DocumentError("correlation.matrix", "; ".join(problems))
            check_correlation(matrix, "correlation.matrix")
        except DocumentError as error:
            if matrix:
                self.widget.suggestion = nearest_correlation(np.asarray(matrix)).tolist()
            raise ValidationError(
                f"Not a valid correlation matrix: {error.message}. The nearest valid matrix is shown "
                "below; accept it or correct the cells."
            ) from None
        return {"underlyings": underlyings, "matrix": matrix}

    def has_changed(self, initial, data):
        try:
            return self.clean(data) != self.clean(initial)
        except ValidationError:
            return True


class PlainDecimalsMixin:
    """Show stored decimals as typed (0.8, 20000000) rather than NUMERIC's padding (0.8000000000,
    0E-10); and read typed decimals with the one number parser (``decimal_plain``, spaces around
    trimmed as forms do): ``"١٢٣"``, ``"１２３"`` or ``"1_000"`` are refused on their field, as in
    the API, where Django's ``DecimalField`` would read 123 or 1000."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, value in list(self.initial.items()):
            if isinstance(value, Decimal) and value.is_finite():
                self.initial[name] = f"{value.normalize():f}"

    def clean(self):
        cleaned = super().clean()
        for name, field in self.fields.items():
            if not isinstance(field, forms.DecimalField) or name in self.errors:
                continue
            raw = field.widget.value_from_datadict(self.data, self.files, self.add_prefix(name))
            if isinstance(raw, str) and raw.strip():
                try:
                    decimal_plain(raw.strip(), field=name)
                except ValidationError as error:
                    self.add_error(name, error.message_dict[name])
        return cleaned


def _engine_error_to_form(
    form: forms.Form, error: DocumentError, prefix: str, fields: dict[str, str]
) -> None:
    """Put the engine's refusal on the form field it names: ``<prefix>.<key>...`` → ``fields[key]``
    (the whole form when the key has no field of its own)."""
    key = error.field.removeprefix(f"{prefix}.").replace("[", ".").split(".")[0]
    form.add_error(fields.get(key), f"{error.message} ({error.field})")


_SCALAR_FIELDS = ("mm_ratio", "offset_cap", "lookahead_days", "rate", "price_steps", "min_vol")
_VOL_TERM_FIELDS = ("pivot_days", "short_power", "long_power")
_STANDARD_FIELDS = ("option_imf", "option_min", "option_mmf")


def _number(value):
    """A cleaned form value as the engine reads it: a Decimal as its plain text."""
    return str(value) if isinstance(value, Decimal) else value


class ParameterSetForm(PlainDecimalsMixin, forms.ModelForm):
    correlation = CorrelationField(
        help_text="Editing a cell edits its mirror. Rows and columns follow the set's underlyings."
    )

    class Meta:
        model = ParameterSet
        fields = [
            "version", "effective_at", "reason",
            "mm_ratio", "offset_cap", "lookahead_days", "rate", "price_steps", "min_vol",
            "pivot_days", "short_power", "long_power", "option_imf", "option_min", "option_mmf",
            "correlation", "cure_period_minutes", "sweep_interval_seconds", "insurance_fund_floor",
            "foresight_horizon_days", "foresight_below_ratio", "warning_watch_sigmas",
            "warning_warning_sigmas", "warning_watch_ratio", "warning_warning_ratio", "warning_hysteresis",
        ]  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "correlation" in self.fields:
            self.initial["correlation"] = correlation_project(
                self.instance.correlation or {}, parameter_set_underlyings(self.instance)
            )

    def clean(self):
        """The set-wide numbers through the engine's validator (``check_scalars``: ranges and
        ``price_steps`` in 1..50), each refusal on its field."""
        cleaned = super().clean()
        names = (*_SCALAR_FIELDS, *_VOL_TERM_FIELDS, *_STANDARD_FIELDS)
        if any(cleaned.get(name) is None for name in names if name in self.fields):
            return cleaned  # a field already has its own error (or is not on this form)
        form = {name: _number(cleaned[name]) for name in _SCALAR_FIELDS if name in self.fields}
        form["vol_term"] = {name: _number(cleaned[name]) for name in _VOL_TERM_FIELDS if name in self.fields}
        form["standard"] = {name: _number(cleaned[name]) for name in _STANDARD_FIELDS if name in self.fields}
        try:
            check_scalars(form, "parameters")
        except DocumentError as error:
            key = error.field.split(".")[-1]
            self.add_error(key if key in self.fields else None, f"{error.message} ({error.field})")
        return cleaned


def parameter_set_underlyings(parameter_set: ParameterSet) -> list[str]:
    """The underlyings the grid shows: the set's underlying rows, else those of its stored matrix."""
    if parameter_set.pk:
        symbols = sorted(parameter_set.underlying_parameters.values_list("underlying__symbol", flat=True))
        if symbols:
            return symbols
    return list((parameter_set.correlation or {}).get("underlyings") or [])


class UnderlyingParametersForm(PlainDecimalsMixin, forms.ModelForm):
    class Meta:
        model = UnderlyingParameters
        fields = [
            "underlying", "psr", "vol_up", "vol_down", "extreme", "min_basis", "basis_rate", "som_rate",
            "conc_threshold", "conc_rate", "imf", "mmf", "max_age_seconds", "max_deviation", "min_sources",
            "breaker_move", "breaker_window_seconds", "event_move",
        ]  # fmt: skip
        widgets = {"extreme": forms.Textarea(attrs={"rows": 2, "cols": 60})}

    def clean_extreme(self):
        moves = self.cleaned_data["extreme"]
        if not isinstance(moves, list):
            raise ValidationError('A list like [{"multiple": -2, "coverage": 0.35}].')
        return moves

    def clean(self):
        """The row through the engine's validator (``check_underlying``): every number, the
        extreme moves, and ``psr * max(1, |multiple|) < 1`` (no scenario may take the price to
        zero or below), each refusal on the field it names."""
        cleaned = super().clean()
        if any(cleaned.get(name) is None for name in (*UNDERLYING_FIELDS, "extreme")):
            return cleaned  # a field already has its own error
        entry = {name: _number(cleaned[name]) for name in UNDERLYING_FIELDS}
        entry["extreme"] = cleaned["extreme"]
        try:
            check_underlying(entry, "underlying")
        except DocumentError as error:
            _engine_error_to_form(
                self, error, "underlying", {name: name for name in (*UNDERLYING_FIELDS, "extreme")}
            )
        return cleaned


class HaircutBracketFormSet(forms.BaseInlineFormSet):
    """Per asset: upper bounds strictly increasing, exactly one open (blank) bracket, the last."""

    def clean(self):
        super().clean()
        if any(self.errors):
            return
        by_asset: dict = {}
        for form in self.forms:
            if not form.cleaned_data or self._should_delete_form(form):
                continue
            by_asset.setdefault(form.cleaned_data["asset"], []).append(form.cleaned_data)
        errors = []
        for asset, rows in sorted(by_asset.items(), key=lambda item: item[0].symbol):
            ordered = sorted(rows, key=lambda r: (r["up_to"] is None, r["up_to"] or 0))
            brackets = [
                {"up_to": None if r["up_to"] is None else float(r["up_to"]), "haircut": float(r["haircut"])}
                for r in ordered
            ]
            if sum(r["up_to"] is None for r in ordered) > 1:
                errors.append(f"{asset}: only one bracket may be open (blank 'up to').")
                continue
            try:
                check_haircut_brackets(brackets, f"{asset.symbol} haircuts")
            except DocumentError as error:
                errors.append(f"{asset}: {error.message} ({error.field}, brackets sorted by 'up to').")
        if errors:
            raise ValidationError(errors)


class HaircutBracketForm(PlainDecimalsMixin, forms.ModelForm):
    class Meta:
        model = HaircutBracket
        fields = ["asset", "up_to", "haircut"]
