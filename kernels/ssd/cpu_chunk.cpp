// Chunked SSD for CPUs: one pass over the chunks of each (batch, head) sequence, forward and
// backward, with every per-chunk product a small BLAS gemm on the caller's strided layout.
//
// Built on first use by kernels/ssd/cpu_chunk.py (torch.utils.cpp_extension). The algebra is
// that of chunk.py and docs/kernels.md. Each thread takes a range of (batch, head) sequences and
// walks their chunks in time order (reverse order in the backward), the heads of one chunk
// together: their rows are adjacent in memory. A sequence's state S [N, P] stays in cache from
// chunk to chunk, so nothing is gathered, scattered or scanned in bulk; the forward saves the
// state entering every chunk for the backward.
//
// Per chunk of L <= Q steps, with the in-chunk cumsum cs of log_a and end = cs[L-1]:
//   intra block  A[t, s] = scale exp(cs_t - cs_s) (q_t . k_s)   for s <= t, 0 above
//   output       y = A v + qd S,        qd_t = scale exp(cs_t) q_t
//   state        S' = exp(end) S + kd^T v,   kd_s = exp(end - cs_s) k_s
// Two ways to build A, chosen per chunk: "factorised" when the chunk's cumsum spreads over at
// most MAX_FACTORISED_SPAN (A = tril(qh kh^T) with qh_t = scale exp(cs_t - m) q_t,
// kh_s = exp(m - cs_s) k_s around the mid-range m, so qd = exp(m) qh and kd = exp(end - m) kh),
// "exact" otherwise (A = M o (q k^T) with the masked decay M[t, s] = scale exp(cs_t - cs_s)).
// Weights below exp(FLUSH_BELOW) are exactly 0, and the tasks run with denormals flushed:
// subnormal float arithmetic costs ~100x on CPUs.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../cpu_common.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

using anatomy_cpu::FlushDenormals;
using anatomy_cpu::FLUSH_BELOW;
using anatomy_cpu::flushed_exp;
using anatomy_cpu::gemm;
using anatomy_cpu::SequentialBlas;

constexpr float MAX_FACTORISED_SPAN = 40.0f;

struct Dims {
  int64_t B, T, G, H, N, P, Q, n;  // n = number of chunks
  float scale;
};

// Strided pointers into one (batch, head) sequence of the caller's [B, T, X, D] tensors.
struct Sequence {
  const float *q, *k, *v, *log_a;
  int ldq, ldv, lda;  // elements between consecutive steps
  Sequence(const Dims& d, const float* q_, const float* k_, const float* v_, const float* a_,
           int64_t b, int64_t h) {
    const int64_t g = h / (d.H / d.G);
    q = q_ + (b * d.T * d.G + g) * d.N;
    k = k_ + (b * d.T * d.G + g) * d.N;
    v = v_ + (b * d.T * d.H + h) * d.P;
    log_a = a_ + b * d.T * d.H + h;
    ldq = static_cast<int>(d.G * d.N);
    ldv = static_cast<int>(d.H * d.P);
    lda = static_cast<int>(d.H);
  }
};

// One chunk's decay quantities and operands, in per-task buffers reused from chunk to chunk.
struct Chunk {
  const Dims& d;
  int64_t t0 = 0;
  int L = 0;
  bool factorised = true;
  float end = 0, alpha_q = 1, alpha_k = 1;  // qd = alpha_q qh, kd = alpha_k kh
  std::vector<float> cs, fq, fk, qh, kh, A, M;  // cs, fq, fk [Q]; qh, kh [Q, N]; A, M [Q, Q]

  explicit Chunk(const Dims& d_)
      : d(d_), cs(d_.Q), fq(d_.Q), fk(d_.Q), qh(d_.Q * d_.N), kh(d_.Q * d_.N),
        A(d_.Q * d_.Q), M(d_.Q * d_.Q) {}

  // Load chunk c of the sequence: cs, the factors, qh, kh and the intra block A.
  void load(const Sequence& s, int64_t c) {
    const int64_t Q = d.Q, N = d.N;
    t0 = c * Q;
    L = static_cast<int>(std::min(Q, d.T - t0));
    double acc = 0;
    float hi = -std::numeric_limits<float>::infinity(), lo = -hi;
    bool decaying = true;  // every log_a <= 0: cs is non-increasing
    for (int i = 0; i < L; ++i) {
      const float x = s.log_a[(t0 + i) * s.lda];
      decaying = decaying && x <= 0;
      acc += x;
      cs[i] = static_cast<float>(acc);
      hi = std::max(hi, cs[i]);
      lo = std::min(lo, cs[i]);
    }
    end = cs[L - 1];
    factorised = hi - lo <= MAX_FACTORISED_SPAN;
    const float* q = s.q + t0 * s.ldq;
    const float* k = s.k + t0 * s.ldq;
    if (factorised) {
      const float m = 0.5f * (hi + lo);
      for (int i = 0; i < L; ++i) {
        fq[i] = d.scale * std::exp(cs[i] - m);
        fk[i] = std::exp(m - cs[i]);
        for (int64_t j = 0; j < N; ++j) {
          qh[i * N + j] = fq[i] * q[i * s.ldq + j];
          kh[i * N + j] = fk[i] * k[i * s.ldq + j];
        }
      }
      alpha_q = flushed_exp(m);
      alpha_k = flushed_exp(end - m);
      gemm(false, true, L, L, N, 1.0f, qh.data(), N, kh.data(), N, 0.0f, A.data(), Q);
      for (int i = 0; i < L; ++i) std::fill(&A[i * Q + i + 1], &A[i * Q + L], 0.0f);
      return;
    }
    for (int i = 0; i < L; ++i) {
      fq[i] = d.scale * flushed_exp(cs[i]);
      fk[i] = flushed_exp(end - cs[i]);
      for (int64_t j = 0; j < N; ++j) {
        qh[i * N + j] = fq[i] * q[i * s.ldq + j];
        kh[i * N + j] = fk[i] * k[i * s.ldq + j];
      }
    }
    alpha_q = alpha_k = 1.0f;
    gemm(false, true, L, L, N, 1.0f, q, s.ldq, k, s.ldq, 0.0f, A.data(), Q);
    for (int i = 0; i < L; ++i) {
      float* row = &M[i * Q];
      int j = i;
      for (; j >= 0; --j) {
        const float x = cs[i] - cs[j];
        if (x < FLUSH_BELOW && decaying) break;  // and every earlier s: cs_s >= cs_j
        row[j] = x < FLUSH_BELOW ? 0.0f : d.scale * std::exp(x);
      }
      std::fill(row, row + j + 1, 0.0f);
      std::fill(row + i + 1, row + L, 0.0f);
      for (int jj = 0; jj < L; ++jj) A[i * Q + jj] *= row[jj];
    }
  }
};

// Asks the cache for rows [rows, cols] of a strided tensor ahead of their use: the chunk after
// the current one, whose rows are H heads apart and so not covered by the hardware prefetcher.
void prefetch_rows(const float* p, int64_t rows, int64_t ld, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; j += 16) __builtin_prefetch(p + i * ld + j);
}

// The rows of chunk c of a sequence's q, k and v (nothing if there is no chunk c). Inlined:
// as a call it cost the forward ~1 ms at T = 8192 (measured).
__attribute__((always_inline)) inline void prefetch_chunk(const Dims& d, const Sequence& s, int64_t c) {
  if (c < 0 || c >= d.n) return;
  const int64_t t = c * d.Q, rows = std::min(d.Q, d.T - t);
  prefetch_rows(s.q + t * s.ldq, rows, s.ldq, d.N);
  prefetch_rows(s.k + t * s.ldq, rows, s.ldq, d.N);
  prefetch_rows(s.v + t * s.ldv, rows, s.ldv, d.P);
}

// dst [n] = src [n], or zeros when src is null (an absent initial state or its gradient).
void copy_or_zero(float* dst, const float* src, int64_t n) {
  if (src != nullptr) std::memcpy(dst, src, n * sizeof(float));
  else std::fill(dst, dst + n, 0.0f);
}

// x . y (a state-sized dot: four independent sums, not one chain of dependent adds)
float dot(const float* x, const float* y, int64_t n) {
  int64_t i = 0;
  float total = 0;
#if defined(__AVX512F__)
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  for (; i + 64 <= n; i += 64)
    for (int u = 0; u < 4; ++u)
      acc[u] = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16 * u), _mm512_loadu_ps(y + i + 16 * u),
                               acc[u]);
  total = _mm512_reduce_add_ps(
      _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
#endif
  for (; i < n; ++i) total += x[i] * y[i];
  return total;
}

// a . x - b . y over one row (the d cs of a step)
float dot_diff(const float* a, const float* x, const float* b, const float* y, int n) {
  int j = 0;
  float total = 0;
#if defined(__AVX512F__)
  __m512 plus = _mm512_setzero_ps(), minus = _mm512_setzero_ps();
  for (; j + 16 <= n; j += 16) {
    plus = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(x + j), plus);
    minus = _mm512_fmadd_ps(_mm512_loadu_ps(b + j), _mm512_loadu_ps(y + j), minus);
  }
  total = _mm512_reduce_add_ps(_mm512_sub_ps(plus, minus));
#endif
  for (; j < n; ++j) total += a[j] * x[j] - b[j] * y[j];
  return total;
}

// How a row of dq or dk reaches its output: streamed (the only head of its key group: the row
// is written once and not read back here), written (the first of a group's heads in a range)
// or added (the others).
enum class Put { stream, write, add };

// out [n] (=, +=) base + f x (base may be null: 0). A streamed row goes past the cache where
// out is 64-byte aligned: no read of the output's lines first, and no eviction of the
// operands; call store_fence() before returning.
void put_row(Put mode, float* out, const float* base, float f, const float* x, int n) {
  int j = 0;
#if defined(__AVX512F__)
  const bool stream = mode == Put::stream && reinterpret_cast<uintptr_t>(out) % 64 == 0;
  const __m512 vf = _mm512_set1_ps(f);
  for (; j + 16 <= n; j += 16) {
    __m512 r = _mm512_mul_ps(vf, _mm512_loadu_ps(x + j));
    if (base != nullptr) r = _mm512_add_ps(r, _mm512_loadu_ps(base + j));
    if (mode == Put::add) r = _mm512_add_ps(r, _mm512_loadu_ps(out + j));
    if (stream) _mm512_stream_ps(out + j, r);
    else _mm512_storeu_ps(out + j, r);
  }
#endif
  for (; j < n; ++j) {
    const float r = (base != nullptr ? base[j] : 0.0f) + f * x[j];
    out[j] = mode == Put::add ? out[j] + r : r;
  }
}

// Orders this thread's streamed stores before the results are handed back.
void store_fence() {
#if defined(__SSE__)
  _mm_sfence();
#endif
}

Dims make_dims(const torch::Tensor& q, const torch::Tensor& v, int64_t chunk, double scale) {
  Dims d{q.size(0), q.size(1), q.size(2), v.size(2), q.size(3), v.size(3), chunk, 0,
         static_cast<float>(scale)};
  d.n = (d.T + chunk - 1) / chunk;
  return d;
}

// Runs body(b, h, c) for every chunk c of the (batch, head) sequences of this thread's range
// of tasks [begin, stop), chunk-major within each batch: the heads' rows of a chunk are
// adjacent in memory, so walking them together reads whole rows of the caller's tensors.
template <typename Body>
void for_chunks(const Dims& d, int64_t begin, int64_t stop, bool reverse, Body body) {
  for (int64_t b = begin / d.H; b * d.H < stop; ++b) {
    const int64_t h0 = std::max(begin, b * d.H) - b * d.H;
    const int64_t h1 = std::min(stop, (b + 1) * d.H) - b * d.H;
    for (int64_t i = 0; i < d.n; ++i)
      for (int64_t h = h0; h < h1; ++h) body(b, h, reverse ? d.n - 1 - i : i);
  }
}

void check(const torch::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.is_contiguous(),
              name, ": expected a contiguous float32 CPU tensor");
}

}  // namespace

// y [B, T, H, P] and states [B, H, n + 1, N, P] (the state entering each chunk, then the final
// state) when save_states, else the final state [B, H, N, P].
std::vector<torch::Tensor> ssd_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                       torch::Tensor log_a, torch::Tensor initial_state,
                                       double scale, int64_t chunk, bool save_states) {
  for (auto* t : {&q, &k, &v, &log_a}) check(*t, "ssd_forward");
  const Dims d = make_dims(q, v, chunk, scale);
  const int64_t NP = d.N * d.P, kept = save_states ? d.n + 1 : 1;
  auto y = torch::empty({d.B, d.T, d.H, d.P}, v.options());
  auto states = torch::empty({d.B, d.H, kept, d.N, d.P}, v.options());
  const bool has_initial = initial_state.defined() && initial_state.numel() > 0;
  if (has_initial) check(initial_state, "ssd_forward initial_state");
  const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>(),
              *ap = log_a.data_ptr<float>();
  const float* s0 = has_initial ? initial_state.data_ptr<float>() : nullptr;
  float *yp = y.data_ptr<float>(), *sp = states.data_ptr<float>();

  at::parallel_for(0, d.B * d.H, 1, [&](int64_t begin, int64_t stop) {
    FlushDenormals flush;
    SequentialBlas sequential_blas;
    Chunk ch(d);
    const int N = d.N, P = d.P, Q = d.Q;
    for (int64_t task = begin; task < stop; ++task) {
      copy_or_zero(sp + task * kept * NP, has_initial ? s0 + task * NP : nullptr, NP);
    }
    for_chunks(d, begin, stop, false, [&](int64_t b, int64_t h, int64_t c) {
      const Sequence s(d, qp, kp, vp, ap, b, h);
      ch.load(s, c);
      const int L = ch.L;
      float* S = sp + ((b * d.H + h) * kept + (save_states ? c : 0)) * NP;
      prefetch_chunk(d, s, c + 1);  // the next chunk of this head
      const float* v_c = s.v + ch.t0 * s.ldv;
      float* y_c = yp + ((b * d.T + ch.t0) * d.H + h) * P;
      // y = A v + qd S
      gemm(false, false, L, P, L, 1.0f, ch.A.data(), Q, v_c, s.ldv, 0.0f, y_c, s.ldv);
      gemm(false, false, L, P, N, ch.alpha_q, ch.qh.data(), N, S, P, 1.0f, y_c, s.ldv);
      // S' = exp(end) S + kd^T v
      float* next = save_states ? S + NP : S;
      if (next != S) std::memcpy(next, S, NP * sizeof(float));
      gemm(true, false, N, P, L, ch.alpha_k, ch.kh.data(), N, v_c, s.ldv, flushed_exp(ch.end),
           next, P);
    });
  });
  return {y, save_states ? states : states.select(2, 0)};
}

// The backward's split of its (batch, head) tasks into ranges, one per thread, and where each
// range puts its dq, dk rows. Task b H + h belongs to key group gid = b G + h / R (R = H / G
// heads per group), so a group is R consecutive tasks. A range adds the rows of a group's
// heads into the group's row of dq [B, T, G, N] when it holds all of them; a group split
// between ranges gets one scratch [T, N] per range holding part of it (a "slot"), and the
// slots are summed into place once every range is done.
struct TaskSplit {
  int64_t R, tasks, per, ranges;  // heads per group, tasks, tasks per range, number of ranges
  std::vector<int64_t> slot_group;             // the group of each slot
  std::vector<int64_t> first_slot, last_slot;  // per range: the slot of its first / last group

  TaskSplit(const Dims& d, int64_t threads) : R(d.H / d.G), tasks(d.B * d.H) {
    threads = std::max<int64_t>(threads, 1);
    per = (tasks + threads - 1) / threads;
    ranges = (tasks + per - 1) / per;
    first_slot.assign(ranges, -1);
    last_slot.assign(ranges, -1);
    for (int64_t r = 0; r < ranges; ++r) {
      const int64_t first = begin(r) / R, last = (stop(r) - 1) / R;
      if (begin(r) % R != 0 || (first + 1) * R > stop(r)) {
        first_slot[r] = static_cast<int64_t>(slot_group.size());
        slot_group.push_back(first);
      }
      if (last != first && stop(r) % R != 0) {
        last_slot[r] = static_cast<int64_t>(slot_group.size());
        slot_group.push_back(last);
      }
    }
  }
  int64_t begin(int64_t r) const { return r * per; }
  int64_t stop(int64_t r) const { return std::min(tasks, (r + 1) * per); }
  // the slot range r keeps group gid in, or -1 when the range holds the whole group
  int64_t slot(int64_t r, int64_t gid) const {
    if (first_slot[r] >= 0 && slot_group[first_slot[r]] == gid) return first_slot[r];
    if (last_slot[r] >= 0 && slot_group[last_slot[r]] == gid) return last_slot[r];
    return -1;
  }
};

// out [B, T, G, N] rows of each split group = the sum of its slots (scratch [slots, T, N]).
void sum_slots(const Dims& d, const TaskSplit& split, const float* scratch, float* out) {
  const int64_t slots = static_cast<int64_t>(split.slot_group.size());
  for (int64_t first = 0; first < slots;) {
    const int64_t gid = split.slot_group[first];
    int64_t end = first + 1;  // a group's slots are consecutive (ranges are in task order)
    while (end < slots && split.slot_group[end] == gid) ++end;
    const int64_t b = gid / d.G, g = gid % d.G;
    at::parallel_for(0, d.T, 256, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        float* row = out + ((b * d.T + t) * d.G + g) * d.N;
        std::memcpy(row, scratch + (first * d.T + t) * d.N, d.N * sizeof(float));
        for (int64_t slot = first + 1; slot < end; ++slot) {
          const float* part = scratch + (slot * d.T + t) * d.N;
          for (int64_t j = 0; j < d.N; ++j) row[j] += part[j];
        }
      }
    });
    first = end;
  }
}

// Gradients (dq, dk [B, T, G, N], summed over each key group's heads; dv [B, T, H, P];
// d log_a [B, T, H]; d initial state [B, H, N, P]) from dy, the gradient of the final state
// (empty: none) and the states saved by ssd_forward.
std::vector<torch::Tensor> ssd_backward(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                        torch::Tensor log_a, torch::Tensor states,
                                        torch::Tensor dy, torch::Tensor d_final, double scale,
                                        int64_t chunk) {
  for (auto* t : {&q, &k, &v, &log_a, &states, &dy}) check(*t, "ssd_backward");
  const Dims d = make_dims(q, v, chunk, scale);
  const int64_t NP = d.N * d.P;
  const TaskSplit split(d, at::get_num_threads());
  auto dq = torch::empty({d.B, d.T, d.G, d.N}, v.options());
  auto dk = torch::empty({d.B, d.T, d.G, d.N}, v.options());
  const int64_t slots = static_cast<int64_t>(split.slot_group.size());
  auto dq_slots = torch::empty({slots, d.T, d.N}, v.options());
  auto dk_slots = torch::empty({slots, d.T, d.N}, v.options());
  auto dv = torch::empty({d.B, d.T, d.H, d.P}, v.options());
  auto d_log_a = torch::empty_like(log_a);
  // the gradient of the state entering chunk c, carried from chunk to chunk: at the end, the
  // gradient of the initial state
  auto d_state = torch::empty({d.B, d.H, d.N, d.P}, v.options());
  const bool has_final = d_final.defined() && d_final.numel() > 0;
  if (has_final) check(d_final, "ssd_backward d_final");
  const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>(),
              *ap = log_a.data_ptr<float>(), *sp = states.data_ptr<float>(),
              *dyp = dy.data_ptr<float>();
  const float* dfp = has_final ? d_final.data_ptr<float>() : nullptr;
  float *dqp = dq.data_ptr<float>(), *dkp = dk.data_ptr<float>(), *dvp = dv.data_ptr<float>(),
        *dap = d_log_a.data_ptr<float>(), *dsp = d_state.data_ptr<float>(),
        *dq_slot_p = dq_slots.data_ptr<float>(), *dk_slot_p = dk_slots.data_ptr<float>();

  // the tasks of one range (see TaskSplit), chunks in reverse order
  const auto backward_range = [&](int64_t range) {
    const int64_t begin = split.begin(range), stop = split.stop(range);
    FlushDenormals flush;
    SequentialBlas sequential_blas;
    Chunk ch(d);
    const int N = d.N, P = d.P, Q = d.Q;
    std::vector<float> dA(Q * Q), dq_in(Q * N), dk_in(Q * N), dq_st(Q * N), dk_st(Q * N),
        dcs(Q);
    for (int64_t task = begin; task < stop; ++task) {
      copy_or_zero(dsp + task * NP, has_final ? dfp + task * NP : nullptr, NP);
    }
    for_chunks(d, begin, stop, true, [&](int64_t b, int64_t h, int64_t c) {
      const Sequence s(d, qp, kp, vp, ap, b, h);
      ch.load(s, c);
      const int L = ch.L;
      const int64_t task = b * d.H + h, row = (b * d.T + ch.t0) * d.H + h;  // [B, T, H, *]
      const float* S = sp + (task * (d.n + 1) + c) * NP;  // the state entering the chunk
      float* G = dsp + task * NP;                          // d loss / d state leaving it
      if (c > 0) {  // the previous chunk of this head, next in the backward, with its dy and S
        prefetch_chunk(d, s, c - 1);
        prefetch_rows(dyp + row * P - Q * s.ldv, Q, s.ldv, P);
        prefetch_rows(S - NP, 1, 0, NP);
      }
      const float* v_c = s.v + ch.t0 * s.ldv;
      const float* dy_c = dyp + row * P;
      float* dv_c = dvp + row * P;
      const int ldv = s.ldv;
      // end = cs_{L-1} enters through exp(end) S and kd: d end = <G, S_next>
      const float d_end = dot(G, S + NP, NP);
      // dA = tril(dy v^T)
      gemm(false, true, L, L, P, 1.0f, dy_c, ldv, v_c, ldv, 0.0f, dA.data(), Q);
      for (int i = 0; i < L; ++i) std::fill(&dA[i * Q + i + 1], &dA[i * Q + L], 0.0f);
      // dv = A^T dy + kd G
      gemm(true, false, L, P, L, 1.0f, ch.A.data(), Q, dy_c, ldv, 0.0f, dv_c, ldv);
      gemm(false, false, L, P, N, ch.alpha_k, ch.kh.data(), N, G, P, 1.0f, dv_c, ldv);

      // where this head's dq, dk rows go: its key group's rows, in place or in this range's slot
      const int64_t gid = task / split.R, slot = split.slot(range, gid);
      const Put put = split.R == 1 ? Put::stream
                      : task == std::max(begin, gid * split.R) ? Put::write : Put::add;
      float *dq_c, *dk_c;
      int64_t ldg;
      if (slot >= 0) {
        dq_c = dq_slot_p + (slot * d.T + ch.t0) * N;
        dk_c = dk_slot_p + (slot * d.T + ch.t0) * N;
        ldg = N;
      } else {
        dq_c = dqp + ((b * d.T + ch.t0) * d.G + gid % d.G) * N;
        dk_c = dkp + ((b * d.T + ch.t0) * d.G + gid % d.G) * N;
        ldg = d.G * N;
      }
      if (ch.factorised) {
        // A = tril(qh kh^T), qd = alpha_q qh, kd = alpha_k kh:
        // d qh = dA kh + alpha_q dy S^T,  d kh = dA^T qh + alpha_k v G^T
        gemm(false, false, L, N, L, 1.0f, dA.data(), Q, ch.kh.data(), N, 0.0f, dq_in.data(), N);
        gemm(false, true, L, N, P, ch.alpha_q, dy_c, ldv, S, P, 1.0f, dq_in.data(), N);
        gemm(true, false, L, N, L, 1.0f, dA.data(), Q, ch.qh.data(), N, 0.0f, dk_in.data(), N);
        gemm(false, true, L, N, P, ch.alpha_k, v_c, ldv, G, P, 1.0f, dk_in.data(), N);
        for (int i = 0; i < L; ++i) {
          const float *gq = &dq_in[i * N], *gk = &dk_in[i * N];
          // cs_t enters through qh_t = fq_t q_t and kh_t = fk_t k_t
          dcs[i] = dot_diff(&ch.qh[i * N], gq, &ch.kh[i * N], gk, N);
          put_row(put, dq_c + i * ldg, nullptr, ch.fq[i], gq, N);
          put_row(put, dk_c + i * ldg, nullptr, ch.fk[i], gk, N);
        }
      } else {
        // through the state terms: d qd = dy S^T, d kd = v G^T
        gemm(false, true, L, N, P, 1.0f, dy_c, ldv, S, P, 0.0f, dq_st.data(), N);
        gemm(false, true, L, N, P, 1.0f, v_c, ldv, G, P, 0.0f, dk_st.data(), N);
        // A = M o (q k^T): Z = dA o A gives d cs; dA o M is the gradient of q k^T
        std::fill(dcs.begin(), dcs.end(), 0.0f);
        for (int i = 0; i < L; ++i)
          for (int j = 0; j <= i; ++j) {
            const float z = dA[i * Q + j] * ch.A[i * Q + j];
            dcs[i] += z;
            dcs[j] -= z;
            dA[i * Q + j] *= ch.M[i * Q + j];
          }
        const float* q = s.q + ch.t0 * s.ldq;
        const float* k = s.k + ch.t0 * s.ldq;
        gemm(false, false, L, N, L, 1.0f, dA.data(), Q, k, s.ldq, 0.0f, dq_in.data(), N);
        gemm(true, false, L, N, L, 1.0f, dA.data(), Q, q, s.ldq, 0.0f, dk_in.data(), N);
        // qd = qh = fq q and kd = kh = fk k carry the state terms
        for (int i = 0; i < L; ++i) {
          const float *sq = &dq_st[i * N], *sk = &dk_st[i * N];
          dcs[i] += dot_diff(&ch.qh[i * N], sq, &ch.kh[i * N], sk, N);
          put_row(put, dq_c + i * ldg, &dq_in[i * N], ch.fq[i], sq, N);
          put_row(put, dk_c + i * ldg, &dk_in[i * N], ch.fk[i], sk, N);
        }
      }
      // the gradient of the state entering the chunk: exp(end) G + qd^T dy
      gemm(true, false, N, P, L, ch.alpha_q, ch.qh.data(), N, dy_c, ldv, flushed_exp(ch.end), G,
           P);
      // d log_a_i = sum over t >= i of d cs_t (reverse in-chunk cumsum)
      dcs[L - 1] += d_end;
      float acc = 0;
      for (int i = L - 1; i >= 0; --i) {
        acc += dcs[i];
        dap[row + i * d.H] = acc;
      }
    });
    store_fence();
  };
  at::parallel_for(0, split.ranges, 1, [&](int64_t range0, int64_t range1) {
    for (int64_t range = range0; range < range1; ++range) backward_range(range);
  });
  sum_slots(d, split, dq_slot_p, dqp);
  sum_slots(d, split, dk_slot_p, dkp);
  return {dq, dk, dv, d_log_a, d_state};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ssd_forward, "chunked SSD forward (CPU)");
  m.def("backward", &ssd_backward, "chunked SSD backward (CPU)");
}
