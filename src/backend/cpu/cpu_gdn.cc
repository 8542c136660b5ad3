// Gated DeltaNet on the CPU: one work item per (sequence, value head); the delta-rule state of a
// head lives in its sequence's slot and is updated in place. Plain loops: the linear-attention
// layers are a small share of a hybrid model's FLOPs next to the projections.
#include "backend/cpu/cpu_gdn.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "base/error.h"

namespace pagoda::cpu {
namespace {

constexpr int64_t kGrain = 16384;

void check_f32(const Tensor& t, const char* op, const char* what) {
  PAGODA_CHECK(t.dtype == DType::kF32, op, ": ", what, " must be F32, got ", dtype_name(t.dtype));
}

float sigmoidf(float x) { return 1.0f / (1.0f + std::exp(-x)); }
float siluf(float x) { return x / (1.0f + std::exp(-x)); }
float softplusf(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }  // torch's threshold 20

struct SeqInfo {
  int64_t begin, len;  // query tokens [begin, begin + len) of the batch
  bool fresh;          // chunk starts at position 0: zero initial state
  int64_t slot;        // AttentionMetadata::kPaddingSlot: a padding sequence (zero outputs, no state)
};

std::vector<SeqInfo> sequences(const AttentionMetadata& meta, int64_t T, int64_t num_slots, const char* op) {
  PAGODA_CHECK(meta.state_slots.data != nullptr && meta.state_slots.dtype == DType::kI32 &&
                   meta.state_slots.numel() >= meta.num_seqs,
               op, ": attention metadata carries no state slot per sequence (AttentionMetadata::state_slots)");
  const int32_t* qsl = meta.query_start_loc.ptr<int32_t>();
  const int32_t* lens = meta.seq_lens.ptr<int32_t>();
  const int32_t* slots = meta.state_slots.ptr<int32_t>();
  std::vector<SeqInfo> out(meta.num_seqs);
  for (int32_t s = 0; s < meta.num_seqs; ++s) {
    const int64_t b = qsl[s], e = qsl[s + 1];
    PAGODA_CHECK(b >= 0 && b <= e && e <= T, op, ": bad query_start_loc for sequence ", s);
    PAGODA_CHECK((slots[s] >= 0 && slots[s] < num_slots) || slots[s] == AttentionMetadata::kPaddingSlot, op,
                 ": state slot ", slots[s], " of sequence ", s, " out of range [0, ", num_slots, ")");
    PAGODA_CHECK(lens[s] >= e - b, op, ": seq_lens[", s, "] = ", lens[s], " is shorter than its query");
    out[s] = SeqInfo{b, e - b, lens[s] == e - b, slots[s]};
  }
  for (int32_t s = 0; s < meta.num_seqs; ++s)
    for (int32_t t = s + 1; t < meta.num_seqs; ++t)
      PAGODA_CHECK(out[s].len == 0 || out[t].len == 0 || out[s].slot != out[t].slot ||
                       out[s].slot == AttentionMetadata::kPaddingSlot,
                   op, ": sequences ", s, " and ", t, " share state slot ", out[s].slot);
  return out;
}

}  // namespace

void sigmoid_mul(ThreadPool& pool, Tensor x, const Tensor& gate) {
  check_f32(x, "sigmoid_mul", "x");
  check_f32(gate, "sigmoid_mul", "gate");
  const int64_t R = x.rows(), N = x.cols();
  const bool broadcast = gate.cols() == 1 && N != 1;
  PAGODA_CHECK(gate.rows() == R && (broadcast || gate.cols() == N), "sigmoid_mul: x ", x.shape_string(), " gate ",
               gate.shape_string());
  float* xp = x.ptr<float>();
  const float* gp = gate.ptr<float>();
  pool.parallel_for(R, std::max<int64_t>(1, kGrain / std::max<int64_t>(N, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* row = xp + r * N;
      if (broadcast) {
        const float s = sigmoidf(gp[r]);
        for (int64_t i = 0; i < N; ++i) row[i] *= s;
      } else {
        const float* g = gp + r * N;
        for (int64_t i = 0; i < N; ++i) row[i] *= sigmoidf(g[i]);
      }
    }
  });
}

void rms_norm_gated(ThreadPool& pool, const Tensor& x, const Tensor& z, const Tensor& weight, float eps, Tensor out) {
  check_f32(x, "rms_norm_gated", "x");
  check_f32(z, "rms_norm_gated", "z");
  check_f32(weight, "rms_norm_gated", "weight");
  check_f32(out, "rms_norm_gated", "out");
  const int64_t R = x.rows(), d = x.cols();
  PAGODA_CHECK(z.rows() == R && z.cols() == d && out.rows() == R && out.cols() == d && weight.numel() == d,
               "rms_norm_gated: x ", x.shape_string(), " z ", z.shape_string(), " weight ", weight.shape_string(),
               " out ", out.shape_string());
  const float* xp = x.ptr<float>();
  const float* zp = z.ptr<float>();
  const float* w = weight.ptr<float>();
  float* op = out.ptr<float>();
  pool.parallel_for(R, std::max<int64_t>(1, kGrain / std::max<int64_t>(d, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = xp + r * d;
      const float* zr = zp + r * d;
      float ss = 0.0f;
      for (int64_t i = 0; i < d; ++i) ss += xr[i] * xr[i];
      const float inv = 1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
      for (int64_t i = 0; i < d; ++i) op[r * d + i] = w[i] * (xr[i] * inv) * siluf(zr[i]);
    }
  });
}

void causal_conv1d(ThreadPool& pool, const Tensor& x, const Tensor& weight, const AttentionMetadata& meta,
                   LinearAttnState& state, Tensor out) {
  check_f32(x, "causal_conv1d", "x");
  check_f32(weight, "causal_conv1d", "weight");
  check_f32(out, "causal_conv1d", "out");
  check_f32(state.conv, "causal_conv1d", "state.conv");
  const int64_t T = x.rows(), C = x.cols(), K = weight.cols(), S = state.conv.dim(0);
  PAGODA_CHECK(weight.rows() == C && out.rows() == T && out.cols() == C && state.conv.ndim == 3 &&
                   state.conv.dim(1) == C && state.conv.dim(2) == K - 1 && K >= 1,
               "causal_conv1d: x ", x.shape_string(), " weight ", weight.shape_string(), " state ",
               state.conv.shape_string(), " out ", out.shape_string());
  const std::vector<SeqInfo> seqs = sequences(meta, T, S, "causal_conv1d");
  const float* xp = x.ptr<float>();
  const float* w = weight.ptr<float>();
  float* op = out.ptr<float>();
  float* st = state.conv.ptr<float>();
  const int64_t H = K - 1;
  pool.parallel_for(C, std::max<int64_t>(1, kGrain / std::max<int64_t>(T * K, 1)), [&](int64_t c0, int64_t c1) {
    std::vector<float> buf;
    for (int64_t c = c0; c < c1; ++c) {
      const float* wc = w + c * K;
      for (const SeqInfo& s : seqs) {
        if (s.len == 0) continue;
        if (s.slot == AttentionMetadata::kPaddingSlot) {
          for (int64_t t = 0; t < s.len; ++t) op[(s.begin + t) * C + c] = 0.0f;
          continue;
        }
        // buf = [history (K-1) | inputs (len)]
        buf.assign(static_cast<size_t>(H + s.len), 0.0f);
        float* hist = st + (s.slot * C + c) * H;
        if (!s.fresh) std::copy(hist, hist + H, buf.begin());
        for (int64_t t = 0; t < s.len; ++t) buf[H + t] = xp[(s.begin + t) * C + c];
        for (int64_t t = 0; t < s.len; ++t) {
          float acc = 0.0f;
          for (int64_t j = 0; j < K; ++j) acc += wc[j] * buf[t + j];
          op[(s.begin + t) * C + c] = siluf(acc);
        }
        std::copy(buf.end() - H, buf.end(), hist);
      }
    }
  });
}

void gated_delta_rule(ThreadPool& pool, const Tensor& qkv, const Tensor& a, const Tensor& b, const Tensor& A_log,
                      const Tensor& dt_bias, const GdnShape& shape, const AttentionMetadata& meta, int chunk_size,
                      LinearAttnState& state, Tensor out) {
  const char* op = "gated_delta_rule";
  for (const Tensor* t : std::initializer_list<const Tensor*>{&qkv, &a, &b, &A_log, &dt_bias, &out, &state.recurrent})
    check_f32(*t, op, "every tensor");
  const int64_t nk = shape.num_k_heads, nv = shape.num_v_heads, dk = shape.k_head_dim, dv = shape.v_head_dim;
  PAGODA_CHECK(nk > 0 && nv > 0 && dk > 0 && dv > 0 && nv % nk == 0, op, ": bad head shape");
  const int64_t T = qkv.rows(), conv_dim = 2 * nk * dk + nv * dv;
  PAGODA_CHECK(qkv.cols() == conv_dim && a.rows() == T && a.cols() == nv && b.rows() == T && b.cols() == nv &&
                   A_log.numel() == nv && dt_bias.numel() == nv && out.rows() == T && out.cols() == nv * dv,
               op, ": qkv ", qkv.shape_string(), " a ", a.shape_string(), " b ", b.shape_string(), " out ",
               out.shape_string());
  const Tensor& rs = state.recurrent;
  PAGODA_CHECK(rs.ndim == 4 && rs.dim(1) == nv && rs.dim(2) == dk && rs.dim(3) == dv, op, ": state.recurrent ",
               rs.shape_string(), " does not match [slots, ", nv, ", ", dk, ", ", dv, "]");
  PAGODA_CHECK(chunk_size >= 0, op, ": negative chunk_size");
  const std::vector<SeqInfo> seqs = sequences(meta, T, rs.dim(0), op);
  const int64_t r = nv / nk;
  const float* X = qkv.ptr<float>();
  const float* ap = a.ptr<float>();
  const float* bp = b.ptr<float>();
  const float* alog = A_log.ptr<float>();
  const float* dtb = dt_bias.ptr<float>();
  float* O = out.ptr<float>();
  float* states = rs.ptr<float>();
  const float qscale = 1.0f / std::sqrt(static_cast<float>(dk));

  const int64_t items = static_cast<int64_t>(seqs.size()) * nv;
  pool.parallel_for(items, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> qs, ks, vs, g, beta, gam, Tm, U, W, Vn, QK, tmp;
    for (int64_t item = i0; item < i1; ++item) {
      const SeqInfo& s = seqs[item / nv];
      const int64_t h = item % nv, kh = h / r;
      if (s.len == 0) continue;
      if (s.slot == AttentionMetadata::kPaddingSlot) {
        for (int64_t t = 0; t < s.len; ++t) std::fill_n(O + (s.begin + t) * nv * dv + h * dv, dv, 0.0f);
        continue;
      }
      float* S = states + ((s.slot * nv + h) * dk) * dv;  // [dk, dv]
      if (s.fresh) std::fill(S, S + dk * dv, 0.0f);
      const int64_t n = s.len;
      // Per-token inputs of this head: normalised q (scaled), k; v; g; beta.
      qs.resize(n * dk);
      ks.resize(n * dk);
      vs.resize(n * dv);
      g.resize(n);
      beta.resize(n);
      const float A = -std::exp(alog[h]);
      for (int64_t t = 0; t < n; ++t) {
        const float* row = X + (s.begin + t) * conv_dim;
        const float* q = row + kh * dk;
        const float* k = row + nk * dk + kh * dk;
        const float* v = row + 2 * nk * dk + h * dv;
        float qq = 0.0f, kk = 0.0f;
        for (int64_t i = 0; i < dk; ++i) {
          qq += q[i] * q[i];
          kk += k[i] * k[i];
        }
        const float qn = qscale / std::sqrt(qq + 1e-6f), kn = 1.0f / std::sqrt(kk + 1e-6f);
        for (int64_t i = 0; i < dk; ++i) {
          qs[t * dk + i] = q[i] * qn;
          ks[t * dk + i] = k[i] * kn;
        }
        std::copy(v, v + dv, vs.begin() + t * dv);
        const int64_t tok = s.begin + t;
        g[t] = A * softplusf(ap[tok * nv + h] + dtb[h]);
        beta[t] = sigmoidf(bp[tok * nv + h]);
      }
      float* out_base = O + h * dv;
      const int64_t out_stride = nv * dv;

      if (chunk_size == 0 || n == 1) {
        tmp.resize(dv);
        for (int64_t t = 0; t < n; ++t) {
          const float decay = std::exp(g[t]);
          const float* k = &ks[t * dk];
          const float* q = &qs[t * dk];
          // Two passes over S instead of four: (decay S)^T k = decay (S^T k), and the decay, the
          // rank-1 update and the read-out o = S^T q share the second pass.
          std::fill(tmp.begin(), tmp.end(), 0.0f);
          for (int64_t i = 0; i < dk; ++i)
            for (int64_t j = 0; j < dv; ++j) tmp[j] += S[i * dv + j] * k[i];
          for (int64_t j = 0; j < dv; ++j) tmp[j] = (vs[t * dv + j] - decay * tmp[j]) * beta[t];
          float* o = out_base + (s.begin + t) * out_stride;
          std::fill(o, o + dv, 0.0f);
          for (int64_t i = 0; i < dk; ++i) {
            float* Si = S + i * dv;
            const float ki = k[i], qi = q[i];
            for (int64_t j = 0; j < dv; ++j) {
              Si[j] = decay * Si[j] + ki * tmp[j];
              o[j] += Si[j] * qi;
            }
          }
        }
        continue;
      }

      // Chunked (WY) form, transformers' torch_chunk_gated_delta_rule.
      const int64_t C = chunk_size;
      gam.resize(C);
      Tm.resize(C * C);
      QK.resize(C * C);
      U.resize(C * dv);
      W.resize(C * dk);
      Vn.resize(C * dv);
      for (int64_t c0 = 0; c0 < n; c0 += C) {
        const int64_t m = std::min(C, n - c0);
        const float* q = &qs[c0 * dk];
        const float* k = &ks[c0 * dk];
        const float* v = &vs[c0 * dv];
        const float* bt = &beta[c0];
        float acc = 0.0f;
        for (int64_t i = 0; i < m; ++i) gam[i] = acc += g[c0 + i];
        // Tm = strictly lower -(beta_i k_i.k_j exp(gam_i - gam_j)), then forward substitution, + I.
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < m; ++j) {
            float val = 0.0f;
            if (j < i) {
              float d = 0.0f;
              for (int64_t e = 0; e < dk; ++e) d += k[i * dk + e] * k[j * dk + e];
              val = -bt[i] * d * std::exp(gam[i] - gam[j]);
            }
            Tm[i * C + j] = val;
          }
        }
        for (int64_t i = 1; i < m; ++i) {
          // row_i[j] += sum_{l} row_i_orig[l] * Tm[l][j]  (l < i; Tm[l] already updated)
          std::vector<float>& row = tmp;
          row.assign(Tm.begin() + i * C, Tm.begin() + i * C + i);
          for (int64_t j = 0; j < i; ++j) {
            float sum = 0.0f;
            for (int64_t l = j + 1; l < i; ++l) sum += row[l] * Tm[l * C + j];
            Tm[i * C + j] = row[j] + sum;
          }
        }
        for (int64_t i = 0; i < m; ++i) Tm[i * C + i] = 1.0f;
        // U = Tm (beta v), W = Tm (beta exp(gam) k)
        for (int64_t i = 0; i < m; ++i) {
          float* u = &U[i * dv];
          float* w = &W[i * dk];
          std::fill(u, u + dv, 0.0f);
          std::fill(w, w + dk, 0.0f);
          for (int64_t j = 0; j <= i; ++j) {
            const float tv = Tm[i * C + j] * bt[j];
            const float tk = tv * std::exp(gam[j]);
            for (int64_t e = 0; e < dv; ++e) u[e] += tv * v[j * dv + e];
            for (int64_t e = 0; e < dk; ++e) w[e] += tk * k[j * dk + e];
          }
        }
        // Vn = U - W S
        for (int64_t i = 0; i < m; ++i) {
          float* vn = &Vn[i * dv];
          std::copy(&U[i * dv], &U[i * dv] + dv, vn);
          for (int64_t e = 0; e < dk; ++e) {
            const float we = W[i * dk + e];
            const float* Se = S + e * dv;
            for (int64_t f = 0; f < dv; ++f) vn[f] -= we * Se[f];
          }
        }
        // O_i = exp(gam_i) q_i S + sum_{j <= i} (q_i . k_j) exp(gam_i - gam_j) Vn_j
        for (int64_t i = 0; i < m; ++i) {
          float* o = out_base + (s.begin + c0 + i) * out_stride;
          std::fill(o, o + dv, 0.0f);
          const float eg = std::exp(gam[i]);
          for (int64_t e = 0; e < dk; ++e) {
            const float qe = q[i * dk + e] * eg;
            const float* Se = S + e * dv;
            for (int64_t f = 0; f < dv; ++f) o[f] += qe * Se[f];
          }
          for (int64_t j = 0; j <= i; ++j) {
            float d = 0.0f;
            for (int64_t e = 0; e < dk; ++e) d += q[i * dk + e] * k[j * dk + e];
            d *= std::exp(gam[i] - gam[j]);
            for (int64_t f = 0; f < dv; ++f) o[f] += d * Vn[j * dv + f];
          }
        }
        // S = exp(gam_last) S + sum_j exp(gam_last - gam_j) k_j Vn_j^T
        const float gl = gam[m - 1], egl = std::exp(gl);
        for (int64_t i = 0; i < dk * dv; ++i) S[i] *= egl;
        for (int64_t j = 0; j < m; ++j) {
          const float dj = std::exp(gl - gam[j]);
          for (int64_t e = 0; e < dk; ++e) {
            const float ke = k[j * dk + e] * dj;
            float* Se = S + e * dv;
            for (int64_t f = 0; f < dv; ++f) Se[f] += ke * Vn[j * dv + f];
          }
        }
      }
    }
  });
}

}  // namespace pagoda::cpu
