"""The versioned parameter set (spec section 5 ``parameters``, section 6), parsed into arrays.

``parse_parameters(form)`` validates the JSON form and returns a frozen ``Parameters`` whose
per-underlying and per-asset fields are float64 arrays indexed in the form's order of
``underlyings`` and ``assets``. It is the one validator of a parameter set: the engine's document
parsing, the ops admin (forms, proposal, approval, activation) and the API all go through it or
through its parts, which are public for that reason: ``check_scalars`` (the set-wide numbers),
``check_underlying`` (one underlying's scan and standard-rule parameters, extreme moves included),
``check_price_steps``, ``check_correlation``, ``check_haircut_brackets``; and the Higham repair
``nearest_correlation`` (the admin and the psr calibration).

Methodology v1.1 section 5 rules enforced here besides the ranges: every key must be one the
methodology defines (a typo is refused, not ignored), ``price_steps`` is a whole number in
``1..MAX_PRICE_STEPS``, and no scenario may take a price to zero or below:
``psr_u * max(1, |multiple|) < 1`` for the standard scan (``|x| <= psr_u``) and every extreme move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DocumentError
from .parsing import read_list, read_number, read_object, required, shown

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
EXTREME_FIELDS = ("multiple", "coverage")
CORRELATION_TOLERANCE = 1e-10
MAX_PRICE_STEPS = 50

# The keys the methodology defines, per object of the ``parameters`` form.
PARAMETER_KEYS = frozenset(
    {"version", *DEFAULTS, "vol_term", "standard", "underlyings", "correlation", "assets"}
)
VOL_TERM_KEYS = frozenset(DEFAULT_VOL_TERM)
STANDARD_KEYS = frozenset(DEFAULT_STANDARD)
UNDERLYING_KEYS = frozenset({*UNDERLYING_FIELDS, "extreme"})
EXTREME_KEYS = frozenset(EXTREME_FIELDS)
CORRELATION_KEYS = frozenset({"underlyings", "matrix"})
ASSET_KEYS = frozenset({"underlying", "liability_addon", "haircuts"})
BRACKET_KEYS = frozenset({"up_to", "haircut"})


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


def check_keys(form: dict, allowed: frozenset, field: str) -> None:
    """Refuse the first key of ``form`` (in its order) that is not in ``allowed``, naming it."""
    for key in form:
        if key not in allowed:
            raise DocumentError(f"{field}.{key}", "not a parameter the methodology defines")


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
        check_keys(item, BRACKET_KEYS, where)
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


def check_price_steps(value: Any, field: str = "parameters.price_steps") -> int:
    """``price_steps`` (n, giving ``2n + 1`` price points) as an int in ``1..MAX_PRICE_STEPS``."""
    steps = read_number(value, field)
    if steps != int(steps) or not 1 <= steps <= MAX_PRICE_STEPS:
        raise DocumentError(field, f"must be a whole number from 1 to {MAX_PRICE_STEPS}, got {shown(value)}")
    return int(steps)


def check_scalars(form: Any, field: str = "parameters") -> dict[str, float]:
    """The set-wide numbers of a ``parameters`` form, validated, defaults filled in: ``mm_ratio``,
    ``offset_cap``, ``lookahead_days``, ``rate``, ``price_steps`` (int), ``min_vol``, and from
    ``vol_term`` ``pivot_days``, ``short_power``, ``long_power``, from ``standard``
    ``option_imf``, ``option_min``, ``option_mmf``. Unknown keys of ``vol_term`` and ``standard``
    are refused here; those of the top level by ``parse_parameters``."""
    form = read_object(form, field)

    def scalar(source: dict, key: str, default: float, where: str, **checks: Any) -> float:
        return read_number(source.get(key, default), f"{where}.{key}", **checks)

    values = {
        "mm_ratio": scalar(form, "mm_ratio", DEFAULTS["mm_ratio"], field, positive=True, at_most=1.0),
        "offset_cap": scalar(
            form, "offset_cap", DEFAULTS["offset_cap"], field, non_negative=True, at_most=1.0
        ),
        "lookahead_days": scalar(
            form, "lookahead_days", DEFAULTS["lookahead_days"], field, non_negative=True
        ),
        "rate": scalar(form, "rate", DEFAULTS["rate"], field),
        "price_steps": check_price_steps(
            form.get("price_steps", DEFAULTS["price_steps"]), f"{field}.price_steps"
        ),
        "min_vol": scalar(form, "min_vol", DEFAULTS["min_vol"], field, positive=True),
    }
    vt_field = f"{field}.vol_term"
    vol_term = read_object(form.get("vol_term", {}), vt_field)
    check_keys(vol_term, VOL_TERM_KEYS, vt_field)
    values["pivot_days"] = scalar(
        vol_term, "pivot_days", DEFAULT_VOL_TERM["pivot_days"], vt_field, positive=True
    )
    for key in ("short_power", "long_power"):
        values[key] = scalar(vol_term, key, DEFAULT_VOL_TERM[key], vt_field, non_negative=True)
    st_field = f"{field}.standard"
    standard = read_object(form.get("standard", {}), st_field)
    check_keys(standard, STANDARD_KEYS, st_field)
    for key in ("option_imf", "option_min", "option_mmf"):
        values[key] = scalar(standard, key, DEFAULT_STANDARD[key], st_field, non_negative=True)
    return values


def check_underlying(entry: Any, field: str) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """One underlying's parameters (``parameters.underlyings.<name>``), validated: the values of
    ``UNDERLYING_FIELDS`` and the extreme moves ``[(multiple, coverage)]`` (default ±2 at 0.35).

    Besides each field's range, no scenario may take the price to zero or below: the standard scan
    moves the price by up to ``psr`` and an extreme move by ``multiple * psr``, so
    ``psr * max(1, |multiple|) < 1`` is required; the error names ``<field>.psr``.
    """
    entry = read_object(entry, field)
    check_keys(entry, UNDERLYING_KEYS, field)
    values: dict[str, float] = {}
    for key in UNDERLYING_FIELDS:
        checks: dict[str, Any] = {"positive": True} if key == "psr" else {"non_negative": True}
        if key == "vol_down":
            checks["at_most"] = 1.0
        values[key] = read_number(required(entry, key, field), f"{field}.{key}", **checks)
    moves: list[tuple[float, float]] = []
    for k, move in enumerate(read_list(entry.get("extreme", list(DEFAULT_EXTREME)), f"{field}.extreme")):
        move_field = f"{field}.extreme[{k}]"
        read_object(move, move_field)
        check_keys(move, EXTREME_KEYS, move_field)
        multiple = read_number(required(move, "multiple", move_field), f"{move_field}.multiple")
        coverage = read_number(
            required(move, "coverage", move_field), f"{move_field}.coverage", non_negative=True
        )
        moves.append((multiple, coverage))
    psr = values["psr"]
    if not psr < psr_bound(multiple for multiple, _ in moves):
        largest = max(range(len(moves)), key=lambda k: abs(moves[k][0]), default=None)
        if largest is None or abs(moves[largest][0]) <= 1.0:
            message = f"{psr!r} would take the price to zero or below in the standard scan (psr < 1)"
        else:
            multiple = abs(moves[largest][0])
            message = (
                f"psr {psr!r} x |multiple| {multiple!r} of extreme[{largest}] = {psr * multiple!r} "
                "would take the price to zero or below (psr * max(1, |multiple|) must be < 1)"
            )
        raise DocumentError(f"{field}.psr", message)
    return values, moves


def psr_bound(multiples) -> float:
    """The bound psr must stay strictly below with these extreme ``multiples`` (section 5):
    ``1 / max(1, |multiple|, ...)``. The psr calibration caps its proposals under it."""
    return 1.0 / max([1.0, *(abs(float(m)) for m in multiples)])


def parse_parameters(form: Any, field: str = "parameters") -> Parameters:
    """Validate the ``parameters`` object of a margin document and return ``Parameters``."""
    form = read_object(form, field)
    check_keys(form, PARAMETER_KEYS, field)
    version = form.get("version", "")
    if not isinstance(version, str):
        raise DocumentError(f"{field}.version", f"expected a string, got {shown(version)}")
    scalars = check_scalars(form, field)

    und_field = f"{field}.underlyings"
    und_forms = read_object(required(form, "underlyings", field), und_field)
    if not und_forms:
        raise DocumentError(und_field, "at least one underlying is needed")
    names = tuple(und_forms)
    columns: dict[str, list[float]] = {key: [] for key in UNDERLYING_FIELDS}
    extremes: list[list[tuple[float, float]]] = []
    for name in names:
        values, moves = check_underlying(und_forms[name], f"{und_field}.{name}")
        for key in UNDERLYING_FIELDS:
            columns[key].append(values[key])
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
        check_keys(entry, ASSET_KEYS, where)
        linked = entry.get("underlying")
        if linked is not None:
            if not isinstance(linked, str) or linked not in names:
                raise DocumentError(f"{where}.underlying", f"missing underlying {shown(linked)}")
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
        version=version, underlyings=names, mm_ratio=scalars["mm_ratio"],
        offset_cap=scalars["offset_cap"], lookahead_days=scalars["lookahead_days"], rate=scalars["rate"],
        price_steps=int(scalars["price_steps"]), min_vol=scalars["min_vol"],
        pivot_days=scalars["pivot_days"], short_power=scalars["short_power"],
        long_power=scalars["long_power"], option_imf=scalars["option_imf"],
        option_min=scalars["option_min"], option_mmf=scalars["option_mmf"],
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
    check_keys(form, CORRELATION_KEYS, field)
    listed = read_list(required(form, "underlyings", field), f"{field}.underlyings")
    for k, name in enumerate(listed):
        if not isinstance(name, str) or name not in names:
            raise DocumentError(f"{field}.underlyings[{k}]", f"unknown underlying {shown(name)}")
    if len(set(listed)) != len(listed):
        raise DocumentError(f"{field}.underlyings", "an underlying is listed twice")
    missing = [name for name in names if name not in listed]
    if missing:
        raise DocumentError(f"{field}.underlyings", f"does not cover underlying(s) {', '.join(missing)}")
    matrix_field = f"{field}.matrix"
    rows = read_list(required(form, "matrix", field), matrix_field)
    if len(rows) != len(listed):
        raise DocumentError(
            matrix_field, f"must be {len(listed)} x {len(listed)} like correlation.underlyings"
        )
    values = []
    for i, row in enumerate(rows):
        row = read_list(row, f"{matrix_field}[{i}]")
        if len(row) != len(listed):
            raise DocumentError(
                matrix_field, f"must be {len(listed)} x {len(listed)} like correlation.underlyings"
            )
        values.append([read_number(v, f"{matrix_field}[{i}][{j}]") for j, v in enumerate(row)])
    rho = check_correlation(values, matrix_field)
    order = [listed.index(name) for name in names]
    return rho[np.ix_(order, order)]
