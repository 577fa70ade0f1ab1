"""Sufficient statistics that add.

Every type here is a frozen dataclass of sums that SQL computes in one ``GROUP BY`` (per variant,
per weight epoch) and that add with ``+`` across epochs, shards or batches, in the style of
GrowthBook's ``gbstats`` statistics. None of them holds raw events.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike


def _check_non_negative(name: str, value: float) -> None:
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class MeanStats:
    """Per-unit values summarised by ``n``, ``sum`` and ``sum_squares``.

    SQL: ``count(*), sum(v), sum(v * v)`` over one row per unit, where ``v`` is the unit's value
    (e.g. the per-unit sum of an outcome). A 0/1 outcome is better passed as
    :class:`ProportionStats`, which gets intervals valid at 0 and 1.

    Parameters
    ----------
    n : int
        Number of units.
    sum : float
        Sum of the per-unit values.
    sum_squares : float
        Sum of the squared per-unit values.
    """

    n: int = 0
    sum: float = 0.0
    sum_squares: float = 0.0

    def __post_init__(self) -> None:
        _check_non_negative("n", self.n)
        _check_non_negative("sum_squares", self.sum_squares)
        if not math.isfinite(self.sum):
            raise ValueError(f"sum must be finite, got {self.sum!r}")

    @classmethod
    def empty(cls) -> MeanStats:
        """The additive identity (no units)."""
        return cls()

    @classmethod
    def from_values(cls, values: ArrayLike) -> MeanStats:
        """Summarise per-unit values (for tests and small in-memory inputs)."""
        array = np.asarray(values, dtype=float)
        return cls(int(array.size), float(array.sum()), float(np.square(array).sum()))

    def __add__(self, other: MeanStats) -> MeanStats:
        if not isinstance(other, MeanStats):
            return NotImplemented
        return MeanStats(
            self.n + other.n, self.sum + other.sum, self.sum_squares + other.sum_squares
        )

    @property
    def mean(self) -> float:
        """Sample mean; NaN without units."""
        return self.sum / self.n if self.n > 0 else math.nan

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1) of the per-unit values; NaN below two units.

        ``(sum_squares - sum**2 / n) / (n - 1)``, clipped at 0 against rounding.
        """
        if self.n < 2:
            return math.nan
        return max(self.sum_squares - self.sum * self.sum / self.n, 0.0) / (self.n - 1)


@dataclass(frozen=True, slots=True)
class ProportionStats:
    """Units with a binary outcome: ``n`` units of which ``successes`` had it.

    SQL: ``count(*), count(*) FILTER (WHERE converted)`` over one row per unit.
    """

    n: int = 0
    successes: int = 0

    def __post_init__(self) -> None:
        _check_non_negative("n", self.n)
        _check_non_negative("successes", self.successes)
        if self.successes > self.n:
            raise ValueError(f"successes ({self.successes}) cannot exceed n ({self.n})")

    @classmethod
    def empty(cls) -> ProportionStats:
        """The additive identity (no units)."""
        return cls()

    def __add__(self, other: ProportionStats) -> ProportionStats:
        if not isinstance(other, ProportionStats):
            return NotImplemented
        return ProportionStats(self.n + other.n, self.successes + other.successes)

    @property
    def proportion(self) -> float:
        """``successes / n``; NaN without units."""
        return self.successes / self.n if self.n > 0 else math.nan

    @property
    def mean(self) -> float:
        """Alias of :attr:`proportion` (the mean of the 0/1 values)."""
        return self.proportion

    def to_mean_stats(self) -> MeanStats:
        """The same data as :class:`MeanStats` of 0/1 values."""
        return MeanStats(self.n, float(self.successes), float(self.successes))


@dataclass(frozen=True, slots=True)
class RatioStats:
    """A ratio of sums over units, ``sum(numerator) / sum(denominator)``, analysed on units.

    Request-level measures clustered by unit (error rate, mean latency, log loss, precision...)
    are ratios: per unit, ``x`` = the sum of the measure over the unit's requests and ``y`` = the
    unit's request count (or the count of requests the measure is defined on).

    SQL, over one row per unit: ``count(*), sum(x), sum(x*x), sum(y), sum(y*y), sum(x*y)``.

    Parameters
    ----------
    n : int
        Number of units.
    numerator_sum, numerator_sum_squares : float
        ``sum(x)`` and ``sum(x*x)``.
    denominator_sum, denominator_sum_squares : float
        ``sum(y)`` and ``sum(y*y)``.
    cross_sum : float
        ``sum(x*y)``.
    is_proportion : bool
        True when ``x`` counts successes among the unit's ``y`` trials (``0 <= x <= y``), as for
        an error rate. The ratio is then a proportion and its interval stays valid at 0 and 1
        (effective-count Agresti-Caffo / Newcombe; see :func:`abstats.stats.compare`).
    """

    n: int = 0
    numerator_sum: float = 0.0
    numerator_sum_squares: float = 0.0
    denominator_sum: float = 0.0
    denominator_sum_squares: float = 0.0
    cross_sum: float = 0.0
    is_proportion: bool = False

    def __post_init__(self) -> None:
        _check_non_negative("n", self.n)
        _check_non_negative("numerator_sum_squares", self.numerator_sum_squares)
        _check_non_negative("denominator_sum_squares", self.denominator_sum_squares)
        for name in ("numerator_sum", "denominator_sum", "cross_sum"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")

    @classmethod
    def empty(cls, *, is_proportion: bool = False) -> RatioStats:
        """The additive identity (no units)."""
        return cls(is_proportion=is_proportion)

    @classmethod
    def from_values(
        cls, numerators: ArrayLike, denominators: ArrayLike, *, is_proportion: bool = False
    ) -> RatioStats:
        """Summarise per-unit numerators and denominators (tests, small inputs)."""
        x = np.asarray(numerators, dtype=float)
        y = np.asarray(denominators, dtype=float)
        if x.shape != y.shape:
            raise ValueError("numerators and denominators must have the same shape")
        return cls(
            int(x.size),
            float(x.sum()),
            float(np.square(x).sum()),
            float(y.sum()),
            float(np.square(y).sum()),
            float((x * y).sum()),
            is_proportion,
        )

    def __add__(self, other: RatioStats) -> RatioStats:
        if not isinstance(other, RatioStats):
            return NotImplemented
        if self.is_proportion != other.is_proportion:
            raise ValueError("cannot add RatioStats with different is_proportion")
        return RatioStats(
            self.n + other.n,
            self.numerator_sum + other.numerator_sum,
            self.numerator_sum_squares + other.numerator_sum_squares,
            self.denominator_sum + other.denominator_sum,
            self.denominator_sum_squares + other.denominator_sum_squares,
            self.cross_sum + other.cross_sum,
            self.is_proportion,
        )

    @property
    def ratio(self) -> float:
        """``numerator_sum / denominator_sum``; NaN when the denominator sum is 0."""
        if self.denominator_sum == 0:
            return math.nan
        return self.numerator_sum / self.denominator_sum

    @property
    def mean(self) -> float:
        """Alias of :attr:`ratio`."""
        return self.ratio

    @property
    def variance_of_ratio(self) -> float:
        """Delta-method variance of the ratio estimate (not of a unit).

        With per-unit means ``mx, my``, sample variances ``vx, vy`` and covariance ``cxy`` (ddof=1)
        and ``r = mx / my``::

            Var(r) ~= (vx - 2 r cxy + r**2 vy) / (n my**2)

        Source: the first-order Taylor expansion of ``mx / my`` (e.g. Deng, Knoblich and Lu 2018,
        "Applying the Delta Method in Metric Analytics", KDD, eq. 3). NaN below two units or
        with a zero denominator.
        """
        if self.n < 2 or self.denominator_sum == 0:
            return math.nan
        n = self.n
        mx, my = self.numerator_sum / n, self.denominator_sum / n
        vx = max(self.numerator_sum_squares - n * mx * mx, 0.0) / (n - 1)
        vy = max(self.denominator_sum_squares - n * my * my, 0.0) / (n - 1)
        cxy = (self.cross_sum - n * mx * my) / (n - 1)
        r = mx / my
        return max(vx - 2 * r * cxy + r * r * vy, 0.0) / (n * my * my)


CONFUSION_CELLS = ("tp", "fp", "tn", "fn")


@dataclass(frozen=True, slots=True)
class ConfusionStats:
    """Per-unit confusion counts, for classification measures clustered by unit.

    For each unit ``u`` let ``c_u = (tp_u, fp_u, tn_u, fn_u)`` be its counts of requests with a
    joined label, after binarising scores at the threshold. SQL, over one row per unit::

        count(*), sum(tp), sum(fp), sum(tn), sum(fn),
        sum(tp*tp), sum(tp*fp), sum(tp*tn), sum(tp*fn), sum(fp*fp), sum(fp*tn), sum(fp*fn),
        sum(tn*tn), sum(tn*fn), sum(fn*fn)

    Accuracy, precision, recall and F1 are ratios of linear combinations of ``c_u``, so
    :meth:`ratio_stats` turns these sums into the :class:`RatioStats` of any of them.

    Parameters
    ----------
    n : int
        Units.
    sums : tuple of 4 floats
        ``(sum(tp), sum(fp), sum(tn), sum(fn))``.
    cross_products : tuple of 4 tuples of 4 floats
        The symmetric matrix ``sum(c_u c_u^T)`` in the order tp, fp, tn, fn.
    """

    n: int = 0
    sums: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    cross_products: tuple[tuple[float, ...], ...] = field(
        default=((0.0,) * 4,) * 4,
    )

    def __post_init__(self) -> None:
        _check_non_negative("n", self.n)
        if len(self.sums) != 4 or len(self.cross_products) != 4:
            raise ValueError("sums and cross_products must be 4 and 4x4")
        if any(len(row) != 4 for row in self.cross_products):
            raise ValueError("cross_products must be 4x4")

    @classmethod
    def empty(cls) -> ConfusionStats:
        """The additive identity (no units)."""
        return cls()

    @classmethod
    def from_unit_counts(
        cls, tp: ArrayLike, fp: ArrayLike, tn: ArrayLike, fn: ArrayLike
    ) -> ConfusionStats:
        """Summarise per-unit confusion counts (tests, small inputs)."""
        counts = np.stack([np.asarray(a, dtype=float) for a in (tp, fp, tn, fn)], axis=1)
        sums = counts.sum(axis=0)
        cross = counts.T @ counts
        return cls(
            int(counts.shape[0]),
            (float(sums[0]), float(sums[1]), float(sums[2]), float(sums[3])),
            tuple(tuple(float(v) for v in row) for row in cross),
        )

    def __add__(self, other: ConfusionStats) -> ConfusionStats:
        if not isinstance(other, ConfusionStats):
            return NotImplemented
        s = self.sums
        o = other.sums
        return ConfusionStats(
            self.n + other.n,
            (s[0] + o[0], s[1] + o[1], s[2] + o[2], s[3] + o[3]),
            tuple(
                tuple(a + b for a, b in zip(row_a, row_b, strict=True))
                for row_a, row_b in zip(self.cross_products, other.cross_products, strict=True)
            ),
        )

    def ratio_stats(self, measure: str) -> RatioStats:
        """The clustered ratio statistics of ``measure``.

        ========== ======================= =====================
        measure    numerator (per unit)    denominator (per unit)
        ========== ======================= =====================
        accuracy   tp + tn                 tp + fp + tn + fn
        precision  tp                      tp + fp
        recall     tp                      tp + fn
        f1         2 tp                    2 tp + fp + fn
        ========== ======================= =====================

        F1 = 2TP / (2TP + FP + FN) is the harmonic mean of precision and recall written as one
        ratio (van Rijsbergen 1979), so its clustered variance follows from the delta method too.
        Accuracy, precision and recall are proportions of requests (``is_proportion=True``).
        """
        weights = _CONFUSION_MEASURES.get(measure)
        if weights is None:
            raise ValueError(
                f"unknown measure {measure!r}; expected one of {sorted(_CONFUSION_MEASURES)}"
            )
        a = np.asarray(weights[0], dtype=float)
        b = np.asarray(weights[1], dtype=float)
        s = np.asarray(self.sums, dtype=float)
        q = np.asarray(self.cross_products, dtype=float)
        return RatioStats(
            self.n,
            float(a @ s),
            float(a @ q @ a),
            float(b @ s),
            float(b @ q @ b),
            float(a @ q @ b),
            is_proportion=measure != "f1",
        )


_CONFUSION_MEASURES: dict[str, tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] = {
    # (numerator weights, denominator weights) over (tp, fp, tn, fn)
    "accuracy": ((1, 0, 1, 0), (1, 1, 1, 1)),
    "precision": ((1, 0, 0, 0), (1, 1, 0, 0)),
    "recall": ((1, 0, 0, 0), (1, 0, 0, 1)),
    "f1": ((2, 0, 0, 0), (2, 1, 0, 1)),
}


# Degree of the polynomial basis in which a unit's labelled scores are summarised for DeLong's
# variance clustered by unit (see :class:`ScoreClusters`).
AUC_CLUSTER_DEGREE = 5


def score_basis_codes(bins: int) -> np.ndarray:
    """The integer code of each score bin in the clustered-AUC basis: ``c_b = 2 b - (B + 1)`` for
    bins ``b = 1..B`` (centred odd integers, so every power of it is an exact integer in SQL)."""
    return 2 * np.arange(1, bins + 1, dtype=np.int64) - (bins + 1)


def score_moments(positives: ArrayLike, negatives: ArrayLike) -> np.ndarray:
    """Each unit's ``z_u`` (see :class:`ScoreClusters`) from its bin counts ``positives[u, b]``
    and ``negatives[u, b]``: an exact integer array of shape ``(units, 2 (degree + 1))``."""
    pos = np.asarray(positives, dtype=np.int64)
    neg = np.asarray(negatives, dtype=np.int64)
    if pos.ndim != 2 or pos.shape != neg.shape:
        raise ValueError("positives and negatives must be (units, bins) arrays of one shape")
    codes = score_basis_codes(pos.shape[1])
    powers = np.vstack([codes**k for k in range(AUC_CLUSTER_DEGREE + 1)]).T  # (B, D + 1)
    return np.hstack([pos @ powers, neg @ powers])


@dataclass(frozen=True, slots=True)
class ScoreClusters:
    """Per-unit moments of labelled scores, for DeLong's AUC variance clustered by unit.

    For unit ``u`` let ``z_u = (m_u, sum c, ..., sum c^5, n_u, sum c, ..., sum c^5)``: its positive
    requests' count and the sums of the powers of their score bins' codes ``c`` (see
    :func:`score_basis_codes`), then the same for its negative requests. ``units`` counts the
    units and ``products`` holds the upper triangle of ``sum_u z_u z_u^T`` row by row: integers,
    exact in SQL (``sum(z_i * z_j)`` over one row per unit) and additive across epochs.

    With a unit's placement sums ``s_u = sum_{i in u} V10_i`` approximated as ``a . z_u``, where
    ``V10(c) ~ a0 + a1 c + ... + a5 c^5`` is a least-squares fit, ``sum_u (s_u - m_u A)^2`` is a
    quadratic form in ``products``: see :func:`abstats.stats.auc_delong`.
    """

    units: int = 0
    products: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        size = 2 * (AUC_CLUSTER_DEGREE + 1)
        if self.products and len(self.products) != size * (size + 1) // 2:
            raise ValueError(f"products must hold the {size * (size + 1) // 2} upper-triangle sums")
        _check_non_negative("units", self.units)

    @classmethod
    def from_units(cls, positives: ArrayLike, negatives: ArrayLike) -> ScoreClusters:
        """From per-unit bin counts: ``positives[u, b]`` and ``negatives[u, b]`` (the reference
        for the SQL); units without labelled requests are left out."""
        z = score_moments(positives, negatives)
        z = z[z[:, 0] + z[:, AUC_CLUSTER_DEGREE + 1] > 0]
        gram = z.astype(object).T @ z.astype(object)  # Python integers: exact, as in SQL
        return cls.from_gram(len(z), gram)

    @classmethod
    def from_gram(cls, units: int, gram: np.ndarray) -> ScoreClusters:
        """From ``units`` and their ``sum_u z_u z_u^T`` (a symmetric matrix, see :meth:`gram`)."""
        upper = np.triu_indices(2 * (AUC_CLUSTER_DEGREE + 1))
        return cls(int(units), tuple(float(x) for x in gram[upper]))

    def gram(self) -> np.ndarray:
        """``sum_u z_u z_u^T`` as a symmetric matrix."""
        size = 2 * (AUC_CLUSTER_DEGREE + 1)
        gram = np.zeros((size, size))
        gram[np.triu_indices(size)] = self.products
        return gram + np.triu(gram, 1).T

    def __add__(self, other: ScoreClusters) -> ScoreClusters:
        if not isinstance(other, ScoreClusters):
            return NotImplemented
        if not other.products:  # nothing clustered on that side
            return self
        if not self.products:
            return other
        return ScoreClusters(
            self.units + other.units,
            tuple(a + b for a, b in zip(self.products, other.products, strict=True)),
        )


@dataclass(frozen=True, slots=True)
class BinnedScores:
    """Labelled prediction scores binned on fixed edges, for ROC AUC with DeLong's variance.

    SQL: ``width_bucket(score, 0, 1, B)`` (or any fixed edges, shared by all variants), then
    ``count(*) FILTER (WHERE label = 1)`` and ``count(*) FILTER (WHERE label = 0)`` per bin.
    Bins are ordered by increasing score; scores in one bin count as ties (half a concordant pair),
    which is exactly DeLong's treatment of ties (DeLong, DeLong and Clarke-Pearson 1988).

    Parameters
    ----------
    positives, negatives : tuple of int
        Per-bin counts of requests with label 1 and 0.
    units : int or None
        Units contributing the requests, for sample gates and group-sequential information;
        defaults to ``clusters.units``, else to the number of requests.
    clusters : ScoreClusters or None
        The per-unit moments that cluster DeLong's variance by unit; without them the variance
        treats requests as independent.
    """

    positives: tuple[int, ...] = ()
    negatives: tuple[int, ...] = ()
    units: int | None = None
    clusters: ScoreClusters | None = None

    def __post_init__(self) -> None:
        if len(self.positives) != len(self.negatives):
            raise ValueError("positives and negatives must have one count per bin")
        if any(c < 0 for c in self.positives) or any(c < 0 for c in self.negatives):
            raise ValueError("bin counts must be >= 0")

    @classmethod
    def empty(cls, bins: int) -> BinnedScores:
        """No scores in ``bins`` bins."""
        return cls((0,) * bins, (0,) * bins, 0)

    @classmethod
    def from_units(cls, positives: ArrayLike, negatives: ArrayLike) -> BinnedScores:
        """Per-unit bin counts (``[unit, bin]``) summed, with their clustered moments."""
        pos = np.asarray(positives, dtype=np.int64)
        neg = np.asarray(negatives, dtype=np.int64)
        clusters = ScoreClusters.from_units(pos, neg)
        return cls(
            tuple(int(x) for x in pos.sum(axis=0)),
            tuple(int(x) for x in neg.sum(axis=0)),
            clusters.units,
            clusters,
        )

    def __add__(self, other: BinnedScores) -> BinnedScores:
        if not isinstance(other, BinnedScores):
            return NotImplemented
        if len(self.positives) != len(other.positives):
            raise ValueError("cannot add BinnedScores with different bins")
        clusters = None
        if self.clusters is not None and other.clusters is not None:
            clusters = self.clusters + other.clusters
        return BinnedScores(
            tuple(a + b for a, b in zip(self.positives, other.positives, strict=True)),
            tuple(a + b for a, b in zip(self.negatives, other.negatives, strict=True)),
            self.n_units + other.n_units,
            clusters,
        )

    @property
    def n_units(self) -> int:
        """``units`` or, when unknown, the clustered units or the number of labelled requests."""
        if self.units is not None:
            return self.units
        if self.clusters is not None:
            return self.clusters.units
        return sum(self.positives) + sum(self.negatives)


@dataclass(frozen=True, slots=True)
class ClusteredHistogram:
    """Request-level values (latency) on fixed bins, with the per-unit sums that a quantile's
    clustered variance needs.

    Let ``c[u, b]`` be unit ``u``'s count of requests in bin ``b``, ``N_u = sum_b c[u, b]`` and
    ``L[u, b] = sum_{j <= b} c[u, j]`` (the unit's requests at or below bin ``b``). The variance
    of the empirical CDF ``F(b) = sum_u L[u, b] / sum_u N_u`` is a ratio (delta method) that needs
    ``sum_u L[u,b]**2`` and ``sum_u L[u,b] N_u`` at each bin. Both are stored as per-bin
    *increments*, which SQL computes in one pass with one window function::

        WITH per_unit_bin AS (
            SELECT unit_id, width_bucket(ln(latency_ms), ln(lo), ln(hi), B) AS bin, count(*) AS c
            FROM predictions WHERE ... GROUP BY unit_id, bin),
        with_totals AS (
            SELECT bin, c,
                   sum(c) OVER (PARTITION BY unit_id ORDER BY bin) AS below,   -- L[u, b]
                   sum(c) OVER (PARTITION BY unit_id) AS total                 -- N_u
            FROM per_unit_bin)
        SELECT bin, sum(c) AS count,
               sum(c * (2 * below - c)) AS square_increment,   -- L[u,b]^2 - L[u,b-1]^2
               sum(c * total) AS cross_increment               -- (L[u,b] - L[u,b-1]) N_u
        FROM with_totals GROUP BY bin ORDER BY bin;
        -- and separately: count(DISTINCT unit_id) AS units

    (Map ``width_bucket``'s 0 and B+1 into the first and last bins, or use edges from
    :func:`log_spaced_bin_edges`, whose first bin starts at 0 and last bin ends at infinity.)
    All fields add across epochs and variants' shards.

    Parameters
    ----------
    bin_edges : tuple of float
        ``B + 1`` increasing edges; bin ``b`` is ``[edges[b], edges[b+1])``. The last edge may be
        ``inf``.
    counts : tuple of int
        Requests per bin (``sum_u c[u, b]``).
    square_increments : tuple of float
        ``sum_u c[u,b] (2 L[u,b] - c[u,b])``.
    cross_increments : tuple of float
        ``sum_u c[u,b] N_u``.
    units : int
        Units with at least one request.
    """

    bin_edges: tuple[float, ...]
    counts: tuple[int, ...]
    square_increments: tuple[float, ...]
    cross_increments: tuple[float, ...]
    units: int

    def __post_init__(self) -> None:
        bins = len(self.bin_edges) - 1
        if bins < 1:
            raise ValueError("bin_edges needs at least two edges")
        if not all(a < b for a, b in zip(self.bin_edges, self.bin_edges[1:], strict=False)):
            raise ValueError("bin_edges must increase")
        if not (len(self.counts) == len(self.square_increments) == len(self.cross_increments)):
            raise ValueError("counts and increments must have one entry per bin")
        if len(self.counts) != bins:
            raise ValueError(f"expected {bins} bins, got {len(self.counts)}")
        _check_non_negative("units", self.units)

    @classmethod
    def empty(cls, bin_edges: Sequence[float]) -> ClusteredHistogram:
        """No requests on ``bin_edges``."""
        bins = len(bin_edges) - 1
        return cls(tuple(bin_edges), (0,) * bins, (0.0,) * bins, (0.0,) * bins, 0)

    @classmethod
    def from_unit_values(
        cls, values_by_unit: Sequence[ArrayLike], bin_edges: Sequence[float]
    ) -> ClusteredHistogram:
        """Build from raw per-unit values (tests, small inputs); mirrors the SQL above."""
        arrays = [np.asarray(v, dtype=float).ravel() for v in values_by_unit]
        arrays = [a for a in arrays if a.size > 0]
        if not arrays:
            return cls.empty(bin_edges)
        unit_index = np.repeat(np.arange(len(arrays)), [a.size for a in arrays])
        return cls.from_unit_index(unit_index, np.concatenate(arrays), bin_edges)

    @classmethod
    def from_unit_index(
        cls, unit_index: ArrayLike, values: ArrayLike, bin_edges: Sequence[float]
    ) -> ClusteredHistogram:
        """Build from parallel arrays of unit ids (any integers) and values; vectorised."""
        edges = np.asarray(bin_edges, dtype=float)
        bins = edges.size - 1
        x = np.asarray(values, dtype=float).ravel()
        _, unit = np.unique(np.asarray(unit_index).ravel(), return_inverse=True)
        if x.size != unit.size:
            raise ValueError("unit_index and values must have the same length")
        if x.size == 0:
            return cls.empty(bin_edges)
        units = int(unit.max()) + 1
        index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
        c = np.bincount(unit * bins + index, minlength=units * bins).reshape(units, bins)
        c = c.astype(float)
        below = np.cumsum(c, axis=1)
        totals = below[:, -1:]
        return cls(
            tuple(float(e) for e in edges),
            tuple(int(v) for v in c.sum(axis=0)),
            tuple(float(v) for v in (c * (2 * below - c)).sum(axis=0)),
            tuple(float(v) for v in (c * totals).sum(axis=0)),
            units,
        )

    def __add__(self, other: ClusteredHistogram) -> ClusteredHistogram:
        if not isinstance(other, ClusteredHistogram):
            return NotImplemented
        if self.bin_edges != other.bin_edges:
            raise ValueError("cannot add histograms on different bin edges")
        return ClusteredHistogram(
            self.bin_edges,
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            tuple(
                a + b for a, b in zip(self.square_increments, other.square_increments, strict=True)
            ),
            tuple(
                a + b for a, b in zip(self.cross_increments, other.cross_increments, strict=True)
            ),
            self.units + other.units,
        )

    @property
    def requests(self) -> int:
        """Total requests (``sum_u N_u``)."""
        return int(sum(self.counts))


def log_spaced_bin_edges(
    low: float = 0.1, high: float = 600_000.0, bins_per_decade: int = 50
) -> tuple[float, ...]:
    """Fixed log-spaced edges for latency histograms: ``[0, low, ..., high, inf]``.

    With 50 bins per decade neighbouring edges differ by 4.7 %, so interpolated quantiles are
    within a fraction of that of the exact order statistic. SQL bin index for a value ``x``:
    ``0`` if ``x < low``; ``1 + floor(bins_per_decade * log10(x / low))`` capped at the last bin.
    """
    if not 0 < low < high or bins_per_decade < 1:
        raise ValueError("need 0 < low < high and bins_per_decade >= 1")
    decades = math.log10(high / low)
    inner = math.ceil(decades * bins_per_decade)
    edges = [low * 10 ** (i / bins_per_decade) for i in range(inner + 1)]
    return (0.0, *edges, math.inf)
