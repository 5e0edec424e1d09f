"""The three-level emitter: its g2(tau), its emission rate and its exact photon stream (docs/physics.md,
photon correlations).

States 1 (ground), 2 (excited), 3 (shelving); rates in 1/s: k12 pump (proportional to the local
excitation intensity), k21 radiative, k23 intersystem crossing, k31 shelf decay. The populations
obey dp/dt = M p with the rate matrix M of `rate_matrix`.

Photon generation is exact and event by event. A collected photon (collection efficiency eta)
leaves the emitter in the ground state, so the collected photons form a renewal process whose
interval is phase-type: the absorbing Markov chain on {1, 2, 3} with sub-generator T (M
transposed, with 2 -> 1 at rate k21 (1 - eta): an emission that is not collected) and exit rate
k21 eta from state 2 (a collection). Its survival function S(t) = alpha exp(T t) 1 =
sum_j c_j exp(-r_j t) comes from the 3x3 spectral decomposition (the eigenvalues -r_j of T from
its characteristic polynomial, the weights c_j as residues), done once per rate set and start
alpha, and each interval is one uniform u inverted by S(t) = u (safeguarded Newton in
`invert_survival`).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable, Sequence

import numpy as np
from numba import njit

from nvscope.rt.kernels.three_level import g2_shape_from_rates

NEVER_PS: int = int(np.iinfo(np.int64).max)
"""Arrival time (ps) of a photon that never comes (an emitter that is not collected, a zero rate)."""
DARK_RATE: float = 1e-20
"""Collected-photon rate (1/s) below which an emitter is taken as dark: < 1 photon in 3e12 years."""
_PS_PER_S = 1e12


@dataclass(frozen=True)
class ThreeLevelRates:
    """Transition rates of a three-level emitter in 1/s.

    NV-like defaults: k21 = 1/(20 ns), k31 = 1/(250 ns), k23 = 1e7/s, and k12 = 2e7/s, the pump
    at the excitation-PSF peak, just above saturation (k12_sat = (k21 + k23)/(1 + k23/k31) =
    1.7e7/s). They give emission 7.7e6 photons/s and g2 parameters a = 0.747, t1 = 12.9 ns,
    t2 = 148.6 ns.
    """

    k12: float = 2.0e7
    k21: float = 5.0e7
    k23: float = 1.0e7
    k31: float = 4.0e6

    def __post_init__(self) -> None:
        for name in ("k12", "k21", "k23", "k31"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0 or (v == 0 and name in ("k21", "k31")):
                raise ValueError(f"ThreeLevelRates.{name} must be a finite rate in 1/s "
                                 f"({'>= 0' if name in ('k12', 'k23') else '> 0'}), got {v!r}")

    def pumped(self, intensity: float) -> ThreeLevelRates:
        """These rates with k12 scaled by the relative excitation intensity (dimensionless)."""
        return ThreeLevelRates(self.k12 * intensity, self.k21, self.k23, self.k31)


def rate_matrix(rates: ThreeLevelRates) -> np.ndarray:
    """The 3x3 rate matrix M in 1/s, dp/dt = M p for the populations p = (p1, p2, p3)."""
    k12, k21, k23, k31 = rates.k12, rates.k21, rates.k23, rates.k31
    return np.array([[-k12, k21, k31],
                     [k12, -(k21 + k23), 0.0],
                     [0.0, k23, -k31]])


def stationary_populations(rates: ThreeLevelRates) -> np.ndarray:
    """Steady-state populations (p1, p2, p3), dimensionless, summing to 1."""
    k12, k21, k23, k31 = rates.k12, rates.k21, rates.k23, rates.k31
    # M p = 0: p1 k12 = p2 (k21 + k23), p3 k31 = p2 k23; written so that k12 = 0 is fine.
    p = np.array([k21 + k23, k12, k12 * k23 / k31])
    return p / p.sum()


def emission_rate(rates: ThreeLevelRates) -> float:
    """Steady-state emission rate k21 p2 in photons/s (all emitted photons, before collection)."""
    return float(rates.k21 * stationary_populations(rates)[1])


def g2_parameters(rates: ThreeLevelRates) -> tuple[float, float, float]:
    """(a, t1, t2), dimensionless and s, of g2(tau) = 1 - (1 + a) e^{-|tau|/t1} + a e^{-|tau|/t2}."""
    return g2_shape_from_rates(rates.k12, rates.k21, rates.k23, rates.k31)


def g2_emitter(tau_s: np.ndarray | float, rates: ThreeLevelRates) -> np.ndarray:
    """g2_i(tau) of one emitter, dimensionless, at delays tau in s (paper Eq. 3 with g2(0) = 0)."""
    a, t1, t2 = g2_parameters(rates)
    t = np.abs(np.asarray(tau_s, dtype=float))
    return 1.0 - (1.0 + a) * np.exp(-t / t1) + a * np.exp(-t / t2)


def g2_measured(tau_s: np.ndarray | float, signal_rates: np.ndarray, background_rate: float,
                rates_list: Sequence[ThreeLevelRates]) -> np.ndarray:
    """g2(tau) of independent emitters (signal rates S_i, 1/s) plus uncorrelated background B (1/s)."""
    s = np.asarray(signal_rates, dtype=float)
    total = float(s.sum()) + background_rate
    g2 = np.ones_like(np.asarray(tau_s, dtype=float))
    if total <= 0:
        return g2  # no light at all: nothing is correlated
    # docs/physics.md, photon correlations: g2 = 1 + sum_i w_i (g2_i - 1), w_i = (S_i / (sum_j S_j + B))^2.
    for s_i, rates in zip(s, rates_list, strict=True):
        if s_i > 0:
            g2 = g2 + (s_i / total) ** 2 * (g2_emitter(tau_s, rates) - 1.0)
    return g2


# --- the interval between collected photons (phase-type) ------------------------------------------

@dataclass(frozen=True)
class PhotonIntervals:
    """Law of the time to the next collected photon: S(t) = sum_j c_j exp(-r_j t), t in s.

    decay: r_j in 1/s; renewal: c_j after a collected photon (ground state); stationary: c_j
    from the stationary state (the first photon of a stationary stream); rate: the mean
    collected-photon rate in 1/s (1 / mean interval). A rate of 0 means no photon ever.
    """

    decay: np.ndarray
    renewal: np.ndarray
    stationary: np.ndarray
    rate: float


def photon_intervals(rates: ThreeLevelRates, collection_efficiency: float) -> PhotonIntervals:
    """Phase-type law of the interval between collected photons (rates in 1/s, efficiency 0-1)."""
    eta = collection_efficiency
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"collection efficiency must be in [0, 1], got {eta!r}")
    detected = eta * emission_rate(rates)
    if detected < DARK_RATE:
        return poisson_intervals(0.0)
    decay = _sub_generator_decay_rates(rates, eta)
    return PhotonIntervals(decay=decay, renewal=_survival_weights(rates, eta, decay, np.array([1.0, 0.0, 0.0])),
                           stationary=_survival_weights(rates, eta, decay, stationary_populations(rates)),
                           rate=detected)


def _char_poly(rates: ThreeLevelRates, eta: float) -> tuple[float, float, float]:
    """(c2, c1, c0) of det(x I + T) = x^3 - c2 x^2 + c1 x - c0 in x = -eigenvalue (1/s, 1/s^2, 1/s^3).

    Trace, sum of principal 2x2 minors and determinant of -T, each a sum of positive terms: no
    cancellation, so the slowest rate (about c0/c1, tiny for an emitter far from the spot) keeps
    its full relative precision, which a floating-point eigen-solver does not give it.
    """
    k12, k21, k23, k31 = rates.k12, rates.k21, rates.k23, rates.k31
    c2 = k12 + k21 + k23 + k31
    c1 = k12 * (k23 + k21 * eta) + k12 * k31 + (k21 + k23) * k31
    c0 = k12 * k21 * k31 * eta
    return c2, c1, c0


def _sub_generator_decay_rates(rates: ThreeLevelRates, eta: float) -> np.ndarray:
    """The three decay rates x_j (1/s, ascending) of exp(T t): the roots of the characteristic polynomial."""
    c2, c1, c0 = _char_poly(rates, eta)
    x0 = 0.0  # the smallest root: p(0) = -c0 < 0 and p is concave up to c2/3, so Newton climbs to it
    for _ in range(100):
        step = (((x0 - c2) * x0 + c1) * x0 - c0) / ((3.0 * x0 - 2.0 * c2) * x0 + c1)
        x0 -= step
        if abs(step) <= 1e-15 * x0:
            break
    b, c = c2 - x0, c0 / x0  # the other two: x^2 - b x + c = 0
    disc = b * b - 4.0 * c
    if not disc > 1e-12 * b * b:
        raise ValueError(f"the photon-interval law of {rates} with eta = {eta} has complex or "
                         "degenerate eigenvalues (damped oscillation); use other rates")
    x2 = 0.5 * (b + np.sqrt(disc))
    return np.array([x0, c / x2, x2])


def _survival_weights(rates: ThreeLevelRates, eta: float, x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """c_j of S(t) = alpha exp(T t) 1 = sum_j c_j exp(-x_j t) for the start distribution alpha.

    Residues of the Laplace transform N(s) / prod_k (s + x_k), with N(s) = s^2 + n1 s + n0 from
    the moments alpha T^n 1 (n = 0, 1, 2), written as sums of positive terms.
    """
    k12, k21, k23, k31 = rates.k12, rates.k21, rates.k23, rates.k31
    _, a2, a3 = alpha  # with a1 = 1 - a2 - a3 used in the sums
    n1 = k12 + k23 + k31 + k21 * (1.0 - eta * a2)
    n0 = k12 * (k23 + k31 + k21 * eta * a3) + k31 * (k23 + k21 * (1.0 - eta * a2))
    out = np.empty(3)
    for j in range(3):
        others = np.prod([x[k] - x[j] for k in range(3) if k != j])
        out[j] = ((x[j] - n1) * x[j] + n0) / others
    return out


def poisson_intervals(rate: float) -> PhotonIntervals:
    """Exponential interval law of a Poisson stream of `rate` events/s (background, dark counts)."""
    if not (np.isfinite(rate) and rate >= 0):
        raise ValueError(f"a Poisson rate must be finite and >= 0 per s, got {rate!r}")
    one = np.array([1.0])
    return PhotonIntervals(decay=np.array([float(rate)]), renewal=one, stationary=one, rate=float(rate))


@njit(cache=True)
def _survival(t: float, c: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    """S(t) = sum_j c_j exp(-r_j t) and its derivative dS/dt (1/s), t in s."""
    s = 0.0
    ds = 0.0
    for j in range(r.size):
        x = r[j] * t
        if x < 700.0:  # beyond, the term is below any double that matters (and avoids denormals)
            e = c[j] * np.exp(-x)
            s += e
            ds -= r[j] * e
    return s, ds


@njit(cache=True)
def invert_survival(u: float, c: np.ndarray, r: np.ndarray) -> float:
    """The t in s with sum_j c_j exp(-r_j t) = u, for 0 < u <= 1 (inf when never reached)."""
    slow = -1
    for j in range(r.size):  # the slowest mode with weight sets the tail and the first guess
        if c[j] > 0 and r[j] > 0 and (slow < 0 or r[j] < r[slow]):
            slow = j
    if slow < 0:
        return np.inf
    # Newton from the tail asymptote (exact for one exponential; for most photons of an emitter the
    # fast modes have died out and one step confirms it), kept inside a bracket lo < root < hi
    # that it tightens; bisection when Newton leaves the bracket, doubling while hi is unknown.
    t = max(np.log(c[slow] / u) / r[slow], 0.0)
    lo = 0.0
    hi = np.inf
    for _ in range(200):
        s, ds = _survival(t, c, r)
        f = s - u
        if f == 0.0:
            return t
        if f > 0.0:
            lo = t
        else:
            hi = t
        tn = t - f / ds if ds < 0.0 else np.inf
        if hi == np.inf:
            tn = min(tn, 2.0 * t + 1.0 / r[slow])
        if abs(tn - t) <= 1e-12 * tn + 1e-16:
            return tn
        if not lo < tn < hi:
            tn = 0.5 * (lo + hi) if hi < np.inf else 2.0 * t + 1.0 / r[slow]
        if tn > 1e30:
            return np.inf
        t = tn
    return t


@njit(cache=True)
def invert_survival_array(u: np.ndarray, c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """`invert_survival` for each of the uniforms u; intervals in s."""
    out = np.empty(u.size)
    for i in range(u.size):
        out[i] = invert_survival(u[i], c, r)
    return out


@njit(cache=True)
def renewal_arrivals(t_next: int, t_end: int, u: np.ndarray, c: np.ndarray, r: np.ndarray,
                     out: np.ndarray) -> tuple[int, int]:
    """Emit pending arrival t_next (ps) and its successors before t_end, one uniform each.

    Writes the arrivals into `out` (size >= u.size) and returns (n, t_next): the number written,
    which is also the number of uniforms used, and the new pending arrival (>= t_end unless the
    uniforms ran out).
    """
    n = 0
    while t_next < t_end and n < u.size:
        out[n] = t_next
        dt_s = invert_survival(u[n], c, r)
        n += 1
        if dt_s >= (NEVER_PS - t_next) * 1e-12:
            t_next = NEVER_PS
        else:
            t_next += np.int64(np.rint(dt_s * 1e12))
    return n, t_next


# --- a stream of draws, and a renewal stream that continues across reads ----------------------------

class DrawBuffer:
    """Random numbers handed out in order whatever the chunking: peek(n), then advance(used).

    The numbers a stream uses depend only on its generator, never on how the clock was cut
    into reads (the unused part of a chunk stays for the next one).
    """

    def __init__(self, draw: Callable[[int], np.ndarray]):
        self._draw = draw
        self._buf = np.empty(0)
        self._pos = 0

    def peek(self, n: int) -> np.ndarray:
        """The next n numbers, without consuming them."""
        have = self._buf.size - self._pos
        if have < n:
            self._buf = np.concatenate([self._buf[self._pos:], self._draw(max(n - have, 1024))])
            self._pos = 0
        return self._buf[self._pos:self._pos + n]

    def advance(self, n: int) -> None:
        """Consume n numbers."""
        self._pos += n

    def take(self, n: int) -> np.ndarray:
        """The next n numbers, consumed."""
        out = self.peek(n).copy()
        self.advance(n)
        return out


def uniform_draws(rng: np.random.Generator) -> DrawBuffer:
    """Uniforms in (0, 1] from `rng` (never 0, so that a survival can always be inverted)."""
    return DrawBuffer(lambda n: 1.0 - rng.random(n))


class RenewalStream:
    """Arrival times (int64 ps) of a renewal process, continued exactly across consecutive reads."""

    def __init__(self, rng: np.random.Generator, law: PhotonIntervals, t0_ps: int):
        self._u = uniform_draws(rng)
        self.restart(law, t0_ps)

    def restart(self, law: PhotonIntervals, t0_ps: int) -> None:
        """Start afresh at t0 (ps) from the stationary state of `law` (the pending arrival is dropped)."""
        self.law = law
        if law.rate <= 0:
            self.t_next = NEVER_PS
            return
        dt_s = invert_survival_array(self._u.take(1), law.stationary, law.decay)[0]
        far = dt_s >= (NEVER_PS - t0_ps) / _PS_PER_S
        self.t_next = NEVER_PS if far else t0_ps + int(np.rint(dt_s * _PS_PER_S))

    def arrivals(self, t_end_ps: int) -> np.ndarray:
        """All arrivals before t_end (ps) not yet returned, sorted; the next one stays pending."""
        parts = []
        while self.t_next < t_end_ps:
            expected = self.law.rate * (t_end_ps - self.t_next) / _PS_PER_S
            m = int(expected + 5.0 * np.sqrt(expected) + 16)
            u = self._u.peek(m)
            out = np.empty(m, dtype=np.int64)
            n, self.t_next = renewal_arrivals(self.t_next, t_end_ps, u, self.law.renewal,
                                              self.law.decay, out)
            self._u.advance(n)
            parts.append(out[:n])
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


__all__ = [
    "NEVER_PS", "DARK_RATE", "ThreeLevelRates", "rate_matrix", "stationary_populations", "emission_rate",
    "g2_parameters", "g2_emitter", "g2_measured", "PhotonIntervals", "photon_intervals",
    "poisson_intervals", "invert_survival", "invert_survival_array", "renewal_arrivals",
    "DrawBuffer", "uniform_draws", "RenewalStream",
]
