// One decode step of attention for the rollout engine (cocos/engine.py), fused in one parallel loop:
// RoPE of this step's q and k, writing k and v into each row's own KV cache, and attention over
// [the row's prompt entry in the prefix pool | the row's own generated tokens].
//
// Why a kernel: with torch ops, decode attention is 4 batched matmuls per layer over B*Hk tiny
// problems (3 query heads x 64 dims against one head's cache); they ran at ~3 us of overhead per
// problem, not at memory speed, and every row paid for the longest prompt (padding). Here each
// (pool entry, kv head) task reads its keys and values once, only up to their true length, and
// serves all rows (samples) of that entry and all query heads of that kv head.
//
// Numerics: fp32 accumulation and softmax; q stays fp32 after RoPE, k is rounded to the cache dtype.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

template <typename T>
inline float f32(T v) { return static_cast<float>(v); }

template <typename T>
void load_row(const T* src, float* dst, int64_t D) {
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) dst[d] = f32(src[d]);
}

// x*cos + rotate_half(x)*sin, exactly the HF formula (rotate_half(x) = [-x2, x1])
template <typename T>
void rope(const T* x, const float* c, const float* s, float* out, int64_t D, float scale) {
    const int64_t half = D / 2;
    for (int64_t d = 0; d < half; ++d) out[d] = (f32(x[d]) * c[d] - f32(x[d + half]) * s[d]) * scale;
    for (int64_t d = half; d < D; ++d) out[d] = (f32(x[d]) * c[d] + f32(x[d - half]) * s[d]) * scale;
}

inline float dot(const float* a, const float* b, int64_t D) {
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t d = 0; d < D; ++d) acc += a[d] * b[d];
    return acc;
}

inline void axpy(float w, const float* x, float* y, int64_t D) {
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) y[d] += w * x[d];
}

template <typename T>
void run(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
         const torch::Tensor& k_pre, const torch::Tensor& v_pre, torch::Tensor& k_own, torch::Tensor& v_own,
         const torch::Tensor& pre_len, const torch::Tensor& own_len, const torch::Tensor& ent_ptr,
         const torch::Tensor& ent_rows, int64_t H, int64_t Hk, double scale, torch::Tensor& out) {
    const int64_t D = qkv.size(1) / (H + 2 * Hk), rep = H / Hk;
    const int64_t P = ent_ptr.size(0) - 1;
    const int64_t Lc = k_own.size(2);
    const T* qkv_p = qkv.data_ptr<T>();
    const T* cos_p = cos.data_ptr<T>();
    const T* sin_p = sin.data_ptr<T>();
    const T* kp = k_pre.data_ptr<T>();
    const T* vp = v_pre.data_ptr<T>();
    T* ko = k_own.data_ptr<T>();
    T* vo = v_own.data_ptr<T>();
    T* out_p = out.data_ptr<T>();
    const int64_t* plen = pre_len.data_ptr<int64_t>();
    const int64_t* olen = own_len.data_ptr<int64_t>();
    const int64_t* eptr = ent_ptr.data_ptr<int64_t>();
    const int64_t* erows = ent_rows.data_ptr<int64_t>();
    const int64_t qkv_s = qkv.stride(0);
    const int64_t pre_s0 = k_pre.stride(0), pre_s1 = k_pre.stride(1), pre_s2 = k_pre.stride(2);
    const int64_t own_s0 = k_own.stride(0), own_s1 = k_own.stride(1), own_s2 = k_own.stride(2);

    int64_t max_g = 1, max_pre = 1, max_own = 1;
    for (int64_t e = 0; e < P; ++e) {
        max_g = std::max(max_g, eptr[e + 1] - eptr[e]);
        max_pre = std::max(max_pre, plen[e]);
    }
    for (int64_t i = 0; i < qkv.size(0); ++i) max_own = std::max(max_own, olen[i] + 1);
    const int64_t Ls = max_pre + max_own;  // score row length

    at::parallel_for(0, P * Hk, 1, [&](int64_t begin, int64_t end) {
        std::vector<float> q(max_g * rep * D), s(max_g * rep * Ls), o(max_g * rep * D), kv(D), cs(D), sn(D);
        for (int64_t task = begin; task < end; ++task) {
            const int64_t e = task / Hk, h = task % Hk;
            const int64_t r0 = eptr[e], G = eptr[e + 1] - r0, Q = G * rep, Lpre = plen[e];
            if (G == 0) continue;
            // 1. RoPE: q of the rep query heads of kv head h, k of head h; k, v into the own cache
            for (int64_t g = 0; g < G; ++g) {
                const int64_t b = erows[r0 + g], pos = olen[b];
                TORCH_CHECK(pos < Lc, "decode_attention: own cache too short");
                const T* row = qkv_p + b * qkv_s;
                load_row(cos_p + b * D, cs.data(), D);
                load_row(sin_p + b * D, sn.data(), D);
                for (int64_t j = 0; j < rep; ++j)
                    rope(row + (h * rep + j) * D, cs.data(), sn.data(), &q[(g * rep + j) * D], D, (float)scale);
                rope(row + (H + h) * D, cs.data(), sn.data(), kv.data(), D, 1.f);
                T* kdst = ko + b * own_s0 + h * own_s1 + pos * own_s2;
                T* vdst = vo + b * own_s0 + h * own_s1 + pos * own_s2;
                const T* vsrc = row + (H + Hk + h) * D;
                for (int64_t d = 0; d < D; ++d) {
                    kdst[d] = static_cast<T>(kv[d]);
                    vdst[d] = vsrc[d];
                }
            }
            // 2. scores: the shared prompt part once for all Q queries, then each row's own part
            const T* kbase = kp + e * pre_s0 + h * pre_s1;
            for (int64_t l = 0; l < Lpre; ++l) {
                load_row(kbase + l * pre_s2, kv.data(), D);
                for (int64_t qi = 0; qi < Q; ++qi) s[qi * Ls + l] = dot(&q[qi * D], kv.data(), D);
            }
            for (int64_t g = 0; g < G; ++g) {
                const int64_t b = erows[r0 + g], n = olen[b] + 1;
                const T* kb = ko + b * own_s0 + h * own_s1;
                for (int64_t l = 0; l < n; ++l) {
                    load_row(kb + l * own_s2, kv.data(), D);
                    for (int64_t j = 0; j < rep; ++j)
                        s[(g * rep + j) * Ls + Lpre + l] = dot(&q[(g * rep + j) * D], kv.data(), D);
                }
            }
            // 3. softmax over [prompt | own] of each query (fp32)
            for (int64_t qi = 0; qi < Q; ++qi) {
                const int64_t n = Lpre + olen[erows[r0 + qi / rep]] + 1;
                float* sr = &s[qi * Ls];
                float m = -INFINITY;
                for (int64_t l = 0; l < n; ++l) m = std::max(m, sr[l]);
                float z = 0.f;
                for (int64_t l = 0; l < n; ++l) {
                    sr[l] = std::exp(sr[l] - m);
                    z += sr[l];
                }
                const float inv = 1.f / z;
                for (int64_t l = 0; l < n; ++l) sr[l] *= inv;
            }
            // 4. weighted values: prompt part once for all queries, then own parts
            std::fill(o.begin(), o.begin() + Q * D, 0.f);
            const T* vbase = vp + e * pre_s0 + h * pre_s1;
            for (int64_t l = 0; l < Lpre; ++l) {
                load_row(vbase + l * pre_s2, kv.data(), D);
                for (int64_t qi = 0; qi < Q; ++qi) axpy(s[qi * Ls + l], kv.data(), &o[qi * D], D);
            }
            for (int64_t g = 0; g < G; ++g) {
                const int64_t b = erows[r0 + g], n = olen[b] + 1;
                const T* vb = vo + b * own_s0 + h * own_s1;
                for (int64_t l = 0; l < n; ++l) {
                    load_row(vb + l * own_s2, kv.data(), D);
                    for (int64_t j = 0; j < rep; ++j)
                        axpy(s[(g * rep + j) * Ls + Lpre + l], kv.data(), &o[(g * rep + j) * D], D);
                }
                T* dst = out_p + b * H * D + h * rep * D;
                for (int64_t i = 0; i < rep * D; ++i) dst[i] = static_cast<T>(o[g * rep * D + i]);
            }
        }
    });
}

}  // namespace

torch::Tensor decode_attention(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin, torch::Tensor k_pre,
                               torch::Tensor v_pre, torch::Tensor k_own, torch::Tensor v_own, torch::Tensor pre_len,
                               torch::Tensor own_len, torch::Tensor ent_ptr, torch::Tensor ent_rows, int64_t n_heads,
                               int64_t n_kv, double scale) {
    TORCH_CHECK(qkv.dim() == 2 && qkv.stride(1) == 1, "qkv: [B, (H + 2 Hk) * D], rows contiguous");
    TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous(), "cos/sin: contiguous [B, D]");
    for (const auto* t : {&k_pre, &v_pre, &k_own, &v_own})
        TORCH_CHECK(t->dim() == 4 && t->stride(3) == 1 && t->scalar_type() == qkv.scalar_type(),
                    "KV caches: [N, Hk, L, D], last dim contiguous, the dtype of qkv");
    TORCH_CHECK(k_pre.strides() == v_pre.strides() && k_own.strides() == v_own.strides(), "K and V: same layout");
    for (const auto* t : {&pre_len, &own_len, &ent_ptr, &ent_rows})
        TORCH_CHECK(t->scalar_type() == torch::kLong && t->is_contiguous(), "index tensors: contiguous int64");
    auto out = torch::empty({qkv.size(0), n_heads * (qkv.size(1) / (n_heads + 2 * n_kv))}, qkv.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, qkv.scalar_type(), "decode_attention", [&] {
        run<scalar_t>(qkv, cos, sin, k_pre, v_pre, k_own, v_own, pre_len, own_len, ent_ptr, ent_rows, n_heads, n_kv,
                      scale, out);
    });
    return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("decode_attention", &decode_attention, "fused RoPE + KV write + decode attention (cocos engine)");
}
