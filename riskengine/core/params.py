"""The versioned parameter set (spec section 5 ``parameters``, section 6), parsed into arrays.

``parse_parameters(form)`` validates the JSON form and returns a frozen ``Parameters`` whose
per-underlying and per-asset fields are float64 arrays indexed in the form's order of
``underlyings`` and ``assets``. The validation helpers (``check_correlation``,
``check_haircut_brackets``) and the Higham repair ``nearest_correlation`` are public because the
ops admin and the psr calibration reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DocumentError
from .parsing import read_list, read_number, read_object, required

DEFAULTS = {
    "mm_ratio": 0.8,
    "offset_cap": 0.8,
    "lookahead_days": 1.0,
    "rate": 0.0,
    "price_steps": 4,
    "min_vol": 0.01,
}
DEFAULT_VOL_TERM = {"pivot_days": 30.0, "short_power": 0.30, "long_power": 0.13}
DEFAULT_STANDARD = {"option_imf": 0.15, "option_min": 0.10, "option_mmf": 0.075}
DEFAULT_EXTREME = ({"multiple": -2.0, "coverage": 0.35}, {"multiple": 2.0, "coverage": 0.35})
UNDERLYING_FIELDS = (
    "psr", "vol_up", "vol_down", "min_basis", "basis_rate", "som_rate",
    "conc_threshold", "conc_rate", "imf", "mmf",
)  # fmt: skip
CORRELATION_TOLERANCE = 1e-10


@dataclass(frozen=True, eq=False)
class Parameters:
    """A parsed parameter set. ``n_und`` underlyings, ``n_assets`` assets, ``n_ext`` extreme slots.

    Scalars: ``mm_ratio``, ``offset_cap``, ``lookahead_days`` (days), ``rate`` (annual),
    ``price_steps`` (n), ``min_vol``, ``pivot_days`` (days), ``short_power``, ``long_power``,
    ``option_imf``, ``option_min``, ``option_mmf``.

    Per underlying, shape ``(n_und,)``: ``psr``, ``vol_up``, ``vol_down``, ``min_basis``,
    ``basis_rate`` (per year), ``som_rate``, ``conc_threshold`` (USD), ``conc_rate``, ``imf``, ``mmf``.
    ``extreme_multiple``/``extreme_coverage`` ``(n_und, n_ext)``, padded where ``extreme_valid`` is
    False (underlyings may list different numbers of extreme moves).
    ``correlation`` ``(n_und, n_und)`` in ``underlyings`` order.

    Per asset: ``asset_underlying`` ``(n_assets,)`` int, the linked underlying index or -1;
    ``liability_addon`` ``(n_assets,)``; haircut brackets ``haircut_lower``/``haircut_upper``
    (USD of collateral value, ``upper`` = inf for the open bracket) and ``haircut_rate``, all
    ``(n_assets, n_brackets)``, padded with ``lower = upper = inf`` (a zero-width bracket).
    """

    version: str
    underlyings: tuple[str, ...]
    mm_ratio: float
    offset_cap: float
    lookahead_days: float
    rate: float
    price_steps: int
    min_vol: float
    pivot_days: float
    short_power: float
    long_power: float
    option_imf: float
    option_min: float
    option_mmf: float
    psr: np.ndarray
    vol_up: np.ndarray
    vol_down: np.ndarray
    min_basis: np.ndarray
    basis_rate: np.ndarray
    som_rate: np.ndarray
    conc_threshold: np.ndarray
    conc_rate: np.ndarray
    imf: np.ndarray
    mmf: np.ndarray
    extreme_multiple: np.ndarray
    extreme_coverage: np.ndarray
    extreme_valid: np.ndarray
    correlation: np.ndarray
    assets: tuple[str, ...]
    asset_underlying: np.ndarray
    liability_addon: np.ndarray
    haircut_lower: np.ndarray
    haircut_upper: np.ndarray
    haircut_rate: np.ndarray

    @property
    def n_standard_scenarios(self) -> int:
        """``(2n+1)*3`` price x vol scenarios."""
        return (2 * self.price_steps + 1) * 3

    @property
    def n_scenarios(self) -> int:
        return self.n_standard_scenarios + self.extreme_multiple.shape[1]

    def underlying_index(self, name: str) -> int:
        return self.underlyings.index(name)

    def asset_index(self, name: str) -> int:
        return self.assets.index(name)


def check_correlation(matrix: Any, field: str = "correlation.matrix") -> np.ndarray:
    """Return ``matrix`` as float64 ``(n, n)`` if it is a valid correlation matrix, else raise.

    Valid means square, finite, symmetric, unit diagonal and positive semi-definite, each to
    ``CORRELATION_TOLERANCE`` (the smallest eigenvalue may be as low as ``-1e-10 * n``).
    """
    try:
        rho = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise DocumentError(field, "not a numeric matrix") from None
    if rho.ndim != 2 or rho.shape[0] != rho.shape[1]:
        raise DocumentError(field, f"must be a square matrix, got shape {rho.shape}")
    if not np.all(np.isfinite(rho)):
        raise DocumentError(field, "must be finite")
    if not np.allclose(rho, rho.T, rtol=0.0, atol=CORRELATION_TOLERANCE):
        raise DocumentError(field, "not symmetric")
    if not np.allclose(np.diag(rho), 1.0, rtol=0.0, atol=CORRELATION_TOLERANCE):
        raise DocumentError(field, "diagonal must be 1")
    if rho.size and np.linalg.eigvalsh(rho).min() < -CORRELATION_TOLERANCE * rho.shape[0]:
        raise DocumentError(field, "not positive semi-definite")
    return rho


def nearest_correlation(matrix: Any, *, tolerance: float = 1e-12, max_iterations: int = 1000) -> np.ndarray:
    """Higham (2002) nearest correlation matrix in the Frobenius norm.

    Alternating projections with Dykstra's correction between the PSD cone and the unit-diagonal
    matrices. ``matrix`` is ``(n, n)``, symmetrised first; returns a symmetric PSD ``(n, n)``
    float64 with an exact unit diagonal (eigenvalues clipped at 0, then the diagonal rescaled so
    ``check_correlation`` accepts the result).
    """
    a = np.asarray(matrix, dtype=np.float64)
    a = 0.5 * (a + a.T)
    y = a.copy()
    correction = np.zeros_like(a)
    for _ in range(max_iterations):
        r = y - correction
        eigenvalues, eigenvectors = np.linalg.eigh(r)
        x = (eigenvectors * np.maximum(eigenvalues, 0.0)) @ eigenvectors.T
        correction = x - r
        previous = y
        y = x.copy()
        np.fill_diagonal(y, 1.0)
        if np.linalg.norm(y - previous) <= tolerance * max(1.0, np.linalg.norm(y)):
            break
    # Final clean-up: clip negative eigenvalues and rescale to an exact unit diagonal.
    eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (y + y.T))
    x = (eigenvectors * np.maximum(eigenvalues, 0.0)) @ eigenvectors.T
    scale = 1.0 / np.sqrt(np.diag(x))
    x = x * scale[:, None] * scale[None, :]
    x = 0.5 * (x + x.T)
    np.fill_diagonal(x, 1.0)
    return x


def check_haircut_brackets(brackets: Any, field: str) -> list[tuple[float, float]]:
    """Validate ``[{"up_to": USD|null, "haircut": h}, ...]`` and return ``[(upper, haircut)]``.

    ``up_to`` must increase strictly and only the last bracket may (and must) be open (null), so
    every collateral value falls in exactly one bracket; haircuts are within [0, 1].
    """
    items = read_list(brackets, field)
    if not items:
        raise DocumentError(field, "at least one bracket is needed")
    result: list[tuple[float, float]] = []
    previous = 0.0
    for k, item in enumerate(items):
        where = f"{field}[{k}]"
        read_object(item, where)
        rate = read_number(
            required(item, "haircut", where), f"{where}.haircut", non_negative=True, at_most=1.0
        )
        upper_raw = required(item, "up_to", where)
        last = k == len(items) - 1
        if upper_raw is None:
            if not last:
                raise DocumentError(f"{where}.up_to", "only the last bracket may be open (null)")
            upper = np.inf
        else:
            upper = read_number(upper_raw, f"{where}.up_to", positive=True)
            if upper <= previous:
                raise DocumentError(f"{where}.up_to", f"brackets must increase: {upper!r} <= {previous!r}")
            if last:
                raise DocumentError(f"{where}.up_to", "the last bracket must be open (null)")
        previous = upper
        result.append((upper, rate))
    return result


def _scalar(form: dict, key: str, default: float, field: str, **checks: Any) -> float:
    return read_number(form.get(key, default), f"{field}.{key}", **checks)


def parse_parameters(form: Any, field: str = "parameters") -> Parameters:
    """Validate the ``parameters`` object of a margin document and return ``Parameters``."""
    form = read_object(form, field)
    version = str(form.get("version", ""))
    mm_ratio = _scalar(form, "mm_ratio", DEFAULTS["mm_ratio"], field, positive=True, at_most=1.0)
    offset_cap = _scalar(form, "offset_cap", DEFAULTS["offset_cap"], field, non_negative=True, at_most=1.0)
    lookahead = _scalar(form, "lookahead_days", DEFAULTS["lookahead_days"], field, non_negative=True)
    rate = _scalar(form, "rate", DEFAULTS["rate"], field)
    steps_value = _scalar(form, "price_steps", DEFAULTS["price_steps"], field, positive=True)
    if steps_value != int(steps_value):
        raise DocumentError(f"{field}.price_steps", f"must be a whole number, got {steps_value!r}")
    min_vol = _scalar(form, "min_vol", DEFAULTS["min_vol"], field, positive=True)

    vol_term = read_object(form.get("vol_term", {}), f"{field}.vol_term")
    vt_field = f"{field}.vol_term"
    pivot = _scalar(vol_term, "pivot_days", DEFAULT_VOL_TERM["pivot_days"], vt_field, positive=True)
    short_power = _scalar(
        vol_term, "short_power", DEFAULT_VOL_TERM["short_power"], vt_field, non_negative=True
    )
    long_power = _scalar(vol_term, "long_power", DEFAULT_VOL_TERM["long_power"], vt_field, non_negative=True)

    standard = read_object(form.get("standard", {}), f"{field}.standard")
    st_field = f"{field}.standard"
    option_imf = _scalar(standard, "option_imf", DEFAULT_STANDARD["option_imf"], st_field, non_negative=True)
    option_min = _scalar(standard, "option_min", DEFAULT_STANDARD["option_min"], st_field, non_negative=True)
    option_mmf = _scalar(standard, "option_mmf", DEFAULT_STANDARD["option_mmf"], st_field, non_negative=True)

    und_field = f"{field}.underlyings"
    und_forms = read_object(required(form, "underlyings", field), und_field)
    if not und_forms:
        raise DocumentError(und_field, "at least one underlying is needed")
    names = tuple(und_forms)
    columns: dict[str, list[float]] = {key: [] for key in UNDERLYING_FIELDS}
    extremes: list[list[tuple[float, float]]] = []
    for name in names:
        where = f"{und_field}.{name}"
        entry = read_object(und_forms[name], where)
        for key in UNDERLYING_FIELDS:
            checks: dict[str, Any] = {"positive": True} if key == "psr" else {"non_negative": True}
            if key == "vol_down":
                checks["at_most"] = 1.0
            columns[key].append(read_number(required(entry, key, where), f"{where}.{key}", **checks))
        moves = []
        for k, move in enumerate(read_list(entry.get("extreme", list(DEFAULT_EXTREME)), f"{where}.extreme")):
            move_field = f"{where}.extreme[{k}]"
            read_object(move, move_field)
            multiple = read_number(required(move, "multiple", move_field), f"{move_field}.multiple")
            coverage = read_number(
                required(move, "coverage", move_field), f"{move_field}.coverage", non_negative=True
            )
            moves.append((multiple, coverage))
        extremes.append(moves)
    n_und = len(names)
    n_ext = max(len(moves) for moves in extremes)
    extreme_multiple = np.zeros((n_und, n_ext))
    extreme_coverage = np.zeros((n_und, n_ext))
    extreme_valid = np.zeros((n_und, n_ext), dtype=bool)
    for u, moves in enumerate(extremes):
        for e, (multiple, coverage) in enumerate(moves):
            extreme_multiple[u, e], extreme_coverage[u, e], extreme_valid[u, e] = multiple, coverage, True

    correlation = _parse_correlation(required(form, "correlation", field), names, f"{field}.correlation")

    assets_field = f"{field}.assets"
    asset_forms = read_object(required(form, "assets", field), assets_field)
    asset_names = tuple(asset_forms)
    asset_underlying = np.full(len(asset_names), -1, dtype=np.int64)
    liability_addon = np.zeros(len(asset_names))
    brackets = []
    for a, name in enumerate(asset_names):
        where = f"{assets_field}.{name}"
        entry = read_object(asset_forms[name], where)
        linked = entry.get("underlying")
        if linked is not None:
            if linked not in names:
                raise DocumentError(f"{where}.underlying", f"missing underlying {linked!r}")
            asset_underlying[a] = names.index(linked)
        liability_addon[a] = read_number(
            entry.get("liability_addon", 0.0), f"{where}.liability_addon", non_negative=True
        )
        brackets.append(check_haircut_brackets(required(entry, "haircuts", where), f"{where}.haircuts"))
    n_brackets = max((len(b) for b in brackets), default=1)
    shape = (len(asset_names), n_brackets)
    haircut_lower, haircut_upper, haircut_rate = (
        np.full(shape, np.inf),
        np.full(shape, np.inf),
        np.zeros(shape),
    )
    for a, asset_brackets in enumerate(brackets):
        lower = 0.0
        for k, (upper, rate_k) in enumerate(asset_brackets):
            haircut_lower[a, k], haircut_upper[a, k], haircut_rate[a, k] = lower, upper, rate_k
            lower = upper

    def column(key: str) -> np.ndarray:
        return np.asarray(columns[key], dtype=np.float64)

    return Parameters(
        version=version, underlyings=names, mm_ratio=mm_ratio, offset_cap=offset_cap,
        lookahead_days=lookahead, rate=rate, price_steps=int(steps_value), min_vol=min_vol,
        pivot_days=pivot, short_power=short_power, long_power=long_power,
        option_imf=option_imf, option_min=option_min, option_mmf=option_mmf,
        psr=column("psr"), vol_up=column("vol_up"), vol_down=column("vol_down"),
        min_basis=column("min_basis"), basis_rate=column("basis_rate"), som_rate=column("som_rate"),
        conc_threshold=column("conc_threshold"), conc_rate=column("conc_rate"),
        imf=column("imf"), mmf=column("mmf"),
        extreme_multiple=extreme_multiple, extreme_coverage=extreme_coverage, extreme_valid=extreme_valid,
        correlation=correlation, assets=asset_names, asset_underlying=asset_underlying,
        liability_addon=liability_addon, haircut_lower=haircut_lower, haircut_upper=haircut_upper,
        haircut_rate=haircut_rate,
    )  # fmt: skip


def _parse_correlation(form: Any, names: tuple[str, ...], field: str) -> np.ndarray:
    """The correlation matrix re-ordered to ``names``; it must cover each underlying exactly once."""
    form = read_object(form, field)
    listed = read_list(required(form, "underlyings", field), f"{field}.underlyings")
    for k, name in enumerate(listed):
        if name not in names:
            raise DocumentError(f"{field}.underlyings[{k}]", f"unknown underlying {name!r}")
    if len(set(listed)) != len(listed):
        raise DocumentError(f"{field}.underlyings", "an underlying is listed twice")
    missing = [name for name in names if name not in listed]
    if missing:
        raise DocumentError(f"{field}.underlyings", f"does not cover underlying(s) {', '.join(missing)}")
    matrix_field = f"{field}.matrix"
    rows = read_list(required(form, "matrix", field), matrix_field)
    values = [
        [
            read_number(v, f"{matrix_field}[{i}][{j}]")
            for j, v in enumerate(read_list(row, f"{matrix_field}[{i}]"))
        ]
        for i, row in enumerate(rows)
    ]
    if len(values) != len(listed) or any(len(row) != len(listed) for row in values):
        raise DocumentError(
            matrix_field, f"must be {len(listed)} x {len(listed)} like correlation.underlyings"
        )
    rho = check_correlation(values, matrix_field)
    order = [listed.index(name) for name in names]
    return rho[np.ix_(order, order)]
