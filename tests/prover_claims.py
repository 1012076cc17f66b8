"""The prover's claims (tests/test_prover.py, bench/prover.py): true claims the prover must
prove and near misses it must refuse, written as a user would, as one .anat program."""

from __future__ import annotations

from pathlib import Path

import anatomy

ZOO = Path(__file__).resolve().parent.parent / "zoo"

# The claims, written as a user would. `use` brings in the zoo's cores (ssd_core).
CLAIMS_TEXT = f"""
use "{ZOO / 'cores.anat'}"

# a per-head constant decay, as written and broadcast along time in two ways
anatomy retention(q[t, h, n], k[t, h, n], v[t, h, p], log_a[h]) -> y[t, h, p]
  y[t, h, p] = decay(log_a, t, s) * q * k[s, h, n] * v[s, h, p]

anatomy retention_broadcast(q[t, h, n], k[t, h, n], v[t, h, p], log_a[h]) -> y[t, h, p]
  log_ab[t, h] = log_a + 0 * index(t)
  y[t, h, p] = decay(log_ab, t, s) * q * k[s, h, n] * v[s, h, p]

anatomy retention_broadcast_pow(q[t, h, n], k[t, h, n], v[t, h, p], log_a[h]) -> y[t, h, p]
  log_ab[t, h] = log_a * index(t) ** 0
  y[t, h, p] = decay(log_ab, t, s) * q * k[s, h, n] * v[s, h, p]

# near miss: a decay that grows along time is not the constant one
anatomy retention_growing(q[t, h, n], k[t, h, n], v[t, h, p], log_a[h]) -> y[t, h, p]
  log_ab[t, h] = log_a * (1 + index(t) / 4)
  y[t, h, p] = decay(log_ab, t, s) * q * k[s, h, n] * v[s, h, p]

# unit laws: x + 0 * y = x, x * 1 = x, x ** 1 = x
anatomy units(q[t, h, n], k[t, h, n], v[t, h, p], log_a[h]) -> y[t, h, p]
  kk[t, h, n] = k * 1 + 0 * q
  y[t, h, p] = decay(log_a, t, s) * q ** 1 * kk[s, h, n] * v[s, h, p]

# Based's Taylor kernel 1 + q.k + (q.k)^2 / 2, and its feature map [1, q, q (x) q / sqrt 2]
anatomy taylor(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  score[h, t, s] = q * k[s, h, n]
  a[h, t, s] = 1 + score + score ** 2 / 2
  y[t, h, p] = causal(t, s) * a * v[s, h, p]

anatomy taylor_features(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  qq[t, h, n, m] = q * q[t, h, m]
  kk[t, h, n, m] = k * k[t, h, m]
  lin[h, t, s] = q * k[s, h, n]
  quad[h, t, s] = qq * kk[s, h, n, m]
  a[h, t, s] = 1 + lin + quad / 2
  y[t, h, p] = causal(t, s) * a * v[s, h, p]

# near miss: the quadratic feature pairs a query with a key
anatomy taylor_mixed(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  qk[t, h, n, m] = q * k[t, h, m]
  kk[t, h, n, m] = k * k[t, h, m]
  lin[h, t, s] = q * k[s, h, n]
  quad[h, t, s] = qk * kk[s, h, n, m]
  a[h, t, s] = 1 + lin + quad / 2
  y[t, h, p] = causal(t, s) * a * v[s, h, p]

# scalar-gated linear attention, written out and through ssd_core at g = h
anatomy gated(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h]) -> y[t, h, p]
  y[t, h, p] = decay(log_a, t, s) * q * k[s, h, n] * v[s, h, p]

anatomy gated_through_ssd(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h]) -> y[t, h, p]
  y[t, h, p] = ssd_core(q, k, v, log_a)

# near miss: the gate's decay read from the key's time (transposed)
anatomy gated_transposed(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h]) -> y[t, h, p]
  y[t, h, p] = decay(log_a, t, s) * q[s, h, n] * k[t, h, n] * v[s, h, p]

# linear attention with positive features, sum-normalised, with and without 1/sqrt(n)
anatomy normalised_dot(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  score[h, t, s] = causal(t, s) * exp(q) * exp(k[s, h, n])
  y[t, h, p] = normalise(score, s) * v[s, h, p]

anatomy normalised_scaled_dot(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  score[h, t, s] = causal(t, s) * exp(q) * exp(k[s, h, n]) / sqrt(n)
  y[t, h, p] = normalise(score, s) * v[s, h, p]

# near misses: a softmax does not cancel the scale; an epsilon keeps it, by about eps
anatomy softmax_dot(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  score[h, t, s] = q * k[s, h, n]
  y[t, h, p] = softmax(score, s, mask=causal(t, s)) * v[s, h, p]

anatomy softmax_scaled_dot(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  score[h, t, s] = q * k[s, h, n] / sqrt(n)
  y[t, h, p] = softmax(score, s, mask=causal(t, s)) * v[s, h, p]

anatomy normalised_scaled_dot_eps(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  score[h, t, s] = causal(t, s) * exp(q) * exp(k[s, h, n]) / sqrt(n)
  y[t, h, p] = normalise(score, s, eps=1e-6) * v[s, h, p]

# an explicit normaliser with `den + 1e-6`, against the exact quotient
anatomy quotient(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  score[h, t, s] = causal(t, s) * exp(q) * exp(k[s, h, n])
  num[t, h, p] = score * v[s, h, p]
  den[t, h] = score[h, t, s]
  y[t, h, p] = num / den

anatomy quotient_eps(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  score[h, t, s] = causal(t, s) * exp(q) * exp(k[s, h, n])
  num[t, h, p] = score * v[s, h, p]
  den[t, h] = score[h, t, s]
  y[t, h, p] = num / (den + 1e-6)

# scaled by 1.00001 and by 1 + 1e-13: below a counterexample, and at float64 noise
anatomy linear(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  y[t, h, p] = causal(t, s) * q * k[s, h, n] * v[s, h, p]

anatomy linear_nudged(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  y[t, h, p] = causal(t, s) * q * k[s, h, n] * v[s, h, p] * 1.00001

anatomy linear_noise(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  y[t, h, p] = causal(t, s) * q * k[s, h, n] * v[s, h, p] * 1.0000000000001

# arithmetic on numbers: 2 * x / 2 is x
anatomy linear_two_halves(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  y[t, h, p] = 2 * causal(t, s) * q * k[s, h, n] * v[s, h, p] / 2

# issue 15: a scalar decay is the per-channel decay broadcast over the key channel n, so
# SSD (gated), retention and causal linear attention are gated linear attention with one
# value in every channel; the recurrence and the chunked form of a per-channel decay are its
# masked form
anatomy gated_channel(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h]) -> y[t, h, p]
  la[t, h, n] = log_a + 0 * index(n)
  y[t, h, p] = decay(la, t, s) * q * k[s, h, n] * v[s, h, p]

anatomy gated_channel_pow(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h]) -> y[t, h, p]
  la[t, h, n] = log_a * index(n) ** 0
  y[t, h, p] = decay(la, t, s) * q * k[s, h, n] * v[s, h, p]

anatomy retention_channel(q[t, h, n], k[t, h, n], v[t, h, p], log_a[h]) -> y[t, h, p]
  la[t, h, n] = log_a + 0 * index(t) * index(n)
  y[t, h, p] = decay(la, t, s) * q * k[s, h, n] * v[s, h, p]

anatomy linear_channel(q[t, h, n], k[t, h, n], v[t, h, p]) -> y[t, h, p]
  la[t, h, n] = 0 * q
  y[t, h, p] = decay(la, t, s) * q * k[s, h, n] * v[s, h, p]

anatomy gla(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h, n]) -> y[t, h, p]
  y[t, h, p] = decay(log_a, t, s) * q * k[s, h, n] * v[s, h, p]

anatomy gla_scan(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h, n]) -> y[t, h, p]
  st[t, h, n, p] = scan(k * v, log_a, t)
  y[t, h, p] = q * st

anatomy gla_chunked(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h, n]) -> y[t, h, p]
  y[t, h, p] = ssd(q, k, v, log_a, t, chunk=2)

# near miss: a per-channel decay that varies along n
anatomy gated_channel_varying(q[t, h, n], k[t, h, n], v[t, h, p], log_a[t, h]) -> y[t, h, p]
  la[t, h, n] = log_a * (1 + index(n))
  y[t, h, p] = decay(la, t, s) * q * k[s, h, n] * v[s, h, p]

# issue 16: the delta rule's chunked (WY/UT) form is its recurrence (chunk=1) for any chunk
# size; Gated DeltaNet with log-gate 0 is DeltaNet; KDA with a gate constant across channels
# is Gated DeltaNet
anatomy deltanet(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h], log_a[t, h]) -> y[t, h, p]
  y[t, h, p] = delta_rule(q, k, v, beta, 0, t)

anatomy delta_gated(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h], log_a[t, h]) -> y[t, h, p]
  y[t, h, p] = delta_rule(q, k, v, beta, log_a, t)

anatomy delta_gated_zero(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h], log_a[t, h]) -> y[t, h, p]
  y[t, h, p] = delta_rule(q, k, v, beta, 0 * log_a, t)

anatomy delta_gated_chunk4(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h], log_a[t, h]) -> y[t, h, p]
  y[t, h, p] = delta_rule(q, k, v, beta, log_a, t, chunk=4)

anatomy delta_gated_recurrence(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h], log_a[t, h]) -> y[t, h, p]
  y[t, h, p] = delta_rule(q, k, v, beta, log_a, t, chunk=1)

anatomy kda_constant(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h], log_a[t, h]) -> y[t, h, p]
  la[t, h, n] = log_a + 0 * index(n)
  y[t, h, p] = delta_rule(q, k, v, beta, la, t, chunk=8)

anatomy kda_constant_pow(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h], log_a[t, h]) -> y[t, h, p]
  la[t, h, n] = log_a * index(n) ** 0
  y[t, h, p] = delta_rule(q, k, v, beta, la, t)

# near misses: a gate is not DeltaNet; a gate varying across channels is not one gate
anatomy kda_varying(q[t, h, n], k[t, h, n], v[t, h, p], beta[t, h], log_a[t, h]) -> y[t, h, p]
  la[t, h, n] = log_a * (1 + index(n))
  y[t, h, p] = delta_rule(q, k, v, beta, la, t)
"""

# (left, right, expected outcome): proof, counterexample, epsilon, small, agreed
CLAIMS = [
    ("retention", "retention_broadcast", "proof"),
    ("retention", "retention_broadcast_pow", "proof"),
    ("retention", "units", "proof"),
    ("taylor", "taylor_features", "proof"),
    ("gated", "ssd_core", "proof"),
    ("gated", "gated_through_ssd", "proof"),
    ("normalised_dot", "normalised_scaled_dot", "proof"),
    ("linear", "linear_two_halves", "proof"),
    ("gated", "gated_channel", "proof"),
    ("gated", "gated_channel_pow", "proof"),
    ("retention", "retention_channel", "proof"),
    ("linear", "linear_channel", "proof"),
    ("gla", "gla_scan", "proof"),
    ("gla", "gla_chunked", "proof"),
    ("delta_gated", "delta_gated_recurrence", "proof"),
    ("delta_gated_chunk4", "delta_gated_recurrence", "proof"),
    ("deltanet", "delta_gated_zero", "proof"),
    ("delta_gated", "kda_constant", "proof"),
    ("delta_gated", "kda_constant_pow", "proof"),
    ("retention", "retention_growing", "counterexample"),
    ("taylor", "taylor_mixed", "counterexample"),
    ("gated", "gated_transposed", "counterexample"),
    ("softmax_dot", "softmax_scaled_dot", "counterexample"),
    ("gated", "gated_channel_varying", "counterexample"),
    ("delta_gated", "deltanet", "counterexample"),
    ("delta_gated", "kda_varying", "counterexample"),
    ("normalised_dot", "normalised_scaled_dot_eps", "epsilon"),
    ("quotient", "quotient_eps", "epsilon"),
    ("linear", "linear_nudged", "small"),
    ("linear", "linear_noise", "agreed"),
]


def load_claims():
    return anatomy.load(CLAIMS_TEXT, strict_dims=False)
