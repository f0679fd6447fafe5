/* Optional CPU kernels of bars.models (loaded with ctypes by bars.models.layers.kernels; built by setup.py where
 * a C compiler exists, skipped elsewhere). Each kernel computes exactly what the layer's torch fallback computes,
 * bit for bit (tests/test_layers.py checks both paths), so a model's numbers never depend on whether it was built.
 *
 * bars_dropout_mask: the mask of bars.models.layers.Dropout / ReLUDropout on a float32 tensor of n elements.
 * Uniform bits: splitmix64 of a counter, z_j = mix(key + (j + 1) * GAMMA) for j = 0, 1, ... (key: one draw of
 * torch's seeded generator per call); element 4j + k reads bits 16k..16k+15 of z_j as a signed 16-bit integer b
 * (the little-endian int16 view of the int64 array z) and is kept when b >= threshold (and, with relu, x > 0).
 * keep (one byte per element: 1 kept, 0 dropped) and out = x * (kept ? scale : 0) are written; the backward pass
 * (bars_dropout_grad) is grad * (kept ? scale : 0). A byte instead of a float mask: 3 of the 4 bytes per element
 * the forward writes and the backward reads are gone (a [4096, 400] activation: 6.5 -> 1.6 MB each way). */
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define GAMMA 0x9E3779B97F4A7C15ULL
#define BLOCK 1024 /* 64-bit draws per block: 4096 elements */
#define PARALLEL_MIN (1 << 16) /* fewer elements: one thread (a parallel region costs more than it saves) */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(_M_X64)) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define CLONES
#endif

/* The signed 16-bit uniforms of elements 4 g0 .. 4 (g0 + ng) - 1 (ng <= BLOCK draws) into b. */
static inline void uniform16_block(uint64_t key, int64_t g0, int64_t ng, int16_t *b) {
    uint64_t z[BLOCK];
    for (int64_t j = 0; j < ng; j++) {
        uint64_t v = key + (uint64_t)(g0 + j + 1) * GAMMA;
        v = (v ^ (v >> 30)) * 0xBF58476D1CE4E5B9ULL;
        v = (v ^ (v >> 27)) * 0x94D049BB133111EBULL;
        z[j] = v ^ (v >> 31);
    }
    memcpy(b, z, sizeof(uint64_t) * (size_t)ng); /* the int16 view, little-endian as the fallback's */
}

/* Blocks of 4096 elements split between the threads of torch's own OpenMP team (built with -fopenmp, this
 * library's libgomp.so.1 is the one torch loaded first): a thread of our own found torch's worker spinning on the
 * other core (1.50 ms against 1.35 ms single-threaded for 4096 x 400), while torch's worker takes its share at once
 * and reads the rows the op before (a parallel product or normalisation) wrote from its own cache. Every element's
 * bits depend on its index only, so the result does not depend on the threads. The dropout passes below run their
 * body once per block: MASK_BLOCKS with i0 (the block's first element), ne (its size) and b (its uniforms),
 * GRAD_BLOCKS with i0 and ne; both over n elements. */
#ifdef _OPENMP
#define OMP_BLOCKS _Pragma("omp parallel for schedule(static) if (n >= PARALLEL_MIN)")
#else
#define OMP_BLOCKS
#endif
#define MASK_BLOCKS(...)                                                                                          \
    OMP_BLOCKS                                                                                                    \
    for (int64_t g0 = 0; g0 < (n + 3) / 4; g0 += BLOCK) {                                                         \
        int16_t b[4 * BLOCK];                                                                                     \
        int64_t i0 = 4 * g0, ne = n - i0 < 4 * BLOCK ? n - i0 : 4 * BLOCK;                                        \
        uniform16_block(key, g0, (ne + 3) / 4, b);                                                                \
        __VA_ARGS__                                                                                               \
    }
#define GRAD_BLOCKS(...)                                                                                          \
    OMP_BLOCKS                                                                                                    \
    for (int64_t i0 = 0; i0 < n; i0 += 4 * BLOCK) {                                                               \
        int64_t ne = n - i0 < 4 * BLOCK ? n - i0 : 4 * BLOCK;                                                     \
        __VA_ARGS__                                                                                               \
    }

CLONES
void bars_dropout_mask(const float *x, float *out, uint8_t *keep, int64_t n, uint64_t key, int32_t threshold,
                       float scale, int32_t relu) {
    MASK_BLOCKS(
        const float *xs = x + i0;
        float *os = out + i0;
        uint8_t *ks = keep + i0;
        if (relu) {
            for (int64_t i = 0; i < ne; i++) {
                uint8_t k = b[i] >= threshold && xs[i] > 0.0f;
                ks[i] = k;
                os[i] = xs[i] * (k ? scale : 0.0f);
            }
        } else {
            for (int64_t i = 0; i < ne; i++) {
                uint8_t k = b[i] >= threshold;
                ks[i] = k;
                os[i] = xs[i] * (k ? scale : 0.0f);
            }
        })
}

/* bars_dropout_grad: the backward of bars_dropout_mask, dx = grad * (keep ? scale : 0) (the same product as with
 * the float mask, so the same bits, NaN and infinite gradients included), split as the forward is. */
CLONES
void bars_dropout_grad(const float *grad, const uint8_t *keep, float *dx, int64_t n, float scale) {
    GRAD_BLOCKS(
        for (int64_t i = i0; i < i0 + ne; i++)
            dx[i] = grad[i] * (keep[i] ? scale : 0.0f);)
}

/* The same two passes on bfloat16 tensors (what a dropout sees under train.precision=bf16, autocast on the CPU),
 * computed as torch's bfloat16 product does: widen to float32, multiply by the mask value (scale, already rounded
 * to bfloat16 by the caller, as torch rounds the float mask; the product of two bfloat16 values is exact in
 * float32), round to nearest even. A NaN becomes 0xFFFF, as torch's vectorised rounding writes it. Same uniforms,
 * so the same elements are kept as in float32. */
static inline float bf16_widen(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0xFFFF;
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

CLONES
void bars_dropout_mask_bf16(const uint16_t *x, uint16_t *out, uint8_t *keep, int64_t n, uint64_t key,
                            int32_t threshold, float scale, int32_t relu) {
    MASK_BLOCKS(
        const uint16_t *xs = x + i0;
        uint16_t *os = out + i0;
        uint8_t *ks = keep + i0;
        for (int64_t i = 0; i < ne; i++) {
            float xf = bf16_widen(xs[i]);
            uint8_t k = b[i] >= threshold && (!relu || xf > 0.0f);
            ks[i] = k;
            os[i] = bf16_round(xf * (k ? scale : 0.0f));
        })
}

CLONES
void bars_dropout_grad_bf16(const uint16_t *grad, const uint8_t *keep, uint16_t *dx, int64_t n, float scale) {
    GRAD_BLOCKS(
        for (int64_t i = i0; i < i0 + ne; i++)
            dx[i] = bf16_round(bf16_widen(grad[i]) * (keep[i] ? scale : 0.0f));)
}

/* bars_layer_norm_bwd: the input gradient of LayerNorm over the last axis (width d) of `rows` contiguous
 * float32 rows, given the forward's per-row mean and rstd (torch's native_layer_norm's: the forward is torch's own),
 * computed as bars.models.layers.kernels' torch fallback does, in the same order and operations (sums in sequence,
 * no fused multiply-add: built with -ffp-contract=off), so both give the same bits. With xhat_j = (x_j - mean) *
 * rstd and g_j = dy_j * w_j:
 *   a = (g_0 + g_1 + ...) / d,  c = (g_0 * xhat_0 + g_1 * xhat_1 + ...) / d,  dx_j = ((g_j - a) - xhat_j * c) * rstd
 * and p_j = dy_j * xhat_j (the weight's gradient is p summed over rows, by torch in both paths). torch's own
 * backward runs a vector loop along each row, slow when d is not a multiple of the vector width (27 ms against 1
 * for WuKong's [4096, 80, 10] and [4096, 40, 16]); here R rows at a time, R independent chains of sums. */
#define R 16

CLONES
void bars_layer_norm_bwd(const float *restrict dy, const float *restrict x, const float *restrict mean,
                         const float *restrict rstd, const float *restrict w, float *restrict dx,
                         float *restrict p, int64_t rows, int64_t d) {
    const float fd = (float)d;
    for (int64_t r0 = 0; r0 < rows; r0 += R) {
        const int64_t nr = rows - r0 < R ? rows - r0 : R;
        const float *restrict xb = x + r0 * d, *restrict dyb = dy + r0 * d, *restrict mb = mean + r0,
                                *restrict rb = rstd + r0;
        float *restrict dxb = dx + r0 * d, *restrict pb = p + r0 * d;
        float a[R], c[R];
        for (int64_t k = 0; k < nr; k++) {
            float xh = (xb[k * d] - mb[k]) * rb[k], g = dyb[k * d] * w[0];
            a[k] = g;
            c[k] = g * xh;
        }
        for (int64_t j = 1; j < d; j++)
            for (int64_t k = 0; k < nr; k++) {
                float xh = (xb[k * d + j] - mb[k]) * rb[k], g = dyb[k * d + j] * w[j];
                a[k] = a[k] + g;
                c[k] = c[k] + g * xh;
            }
        for (int64_t k = 0; k < nr; k++) {
            a[k] = a[k] / fd;
            c[k] = c[k] / fd;
        }
        for (int64_t k = 0; k < nr; k++)
            for (int64_t j = 0; j < d; j++) {
                float xh = (xb[k * d + j] - mb[k]) * rb[k], g = dyb[k * d + j] * w[j];
                pb[k * d + j] = dyb[k * d + j] * xh;
                dxb[k * d + j] = ((g - a[k]) - xh * c[k]) * rb[k];
            }
    }
}

/* bars_layer_norm_mid_fwd / _bwd: LayerNorm over the middle axis of a contiguous [outer, d, inner] array (each of
 * the outer * inner columns normalised over its d values; weight and bias indexed by the d axis: WuKong's layers on
 * their transposed layout), forward and backward, as the torch fallback computes them (sums in sequence):
 *   mean = (x_0 + x_1 + ...) / d,  var = ((x_0 - mean)^2 + ...) / d,  rstd = 1 / sqrt(var + eps)
 *   y_j = ((x_j - mean) * rstd) * w_j + b_j;  the backward as bars_layer_norm_bwd's.
 * The loops run along `inner`, which is contiguous, so they vectorise. `s`: scratch of nt * 4 * inner floats (nt:
 * the most threads the rows are split between, mid_threads below).
 * mean / rstd ([outer, inner]) may be NULL (inference). */
CLONES
static void layer_norm_mid_fwd_rows(const float *restrict x, const float *restrict w, const float *restrict b,
                                    float *restrict y, float *restrict mean_out, float *restrict rstd_out, int64_t o0,
                                    int64_t o1, int64_t d, int64_t inner, float eps, float *restrict s) {
    const float fd = (float)d;
    float *restrict mean = s, *restrict rstd = s + inner, *restrict v = s + 2 * inner;
    for (int64_t o = o0; o < o1; o++) {
        const float *restrict xo = x + o * d * inner;
        float *restrict yo = y + o * d * inner;
        for (int64_t i = 0; i < inner; i++) mean[i] = xo[i];
        for (int64_t j = 1; j < d; j++)
            for (int64_t i = 0; i < inner; i++) mean[i] = mean[i] + xo[j * inner + i];
        for (int64_t i = 0; i < inner; i++) {
            mean[i] = mean[i] / fd;
            v[i] = 0.0f;
        }
        for (int64_t j = 0; j < d; j++)
            for (int64_t i = 0; i < inner; i++) {
                float c = xo[j * inner + i] - mean[i];
                v[i] = v[i] + c * c;
            }
        for (int64_t i = 0; i < inner; i++) rstd[i] = 1.0f / sqrtf(v[i] / fd + eps);
        for (int64_t j = 0; j < d; j++) {
            const float wj = w[j], bj = b[j];
            for (int64_t i = 0; i < inner; i++) yo[j * inner + i] = ((xo[j * inner + i] - mean[i]) * rstd[i]) * wj + bj;
        }
        if (mean_out) {
            memcpy(mean_out + o * inner, mean, sizeof(float) * (size_t)inner);
            memcpy(rstd_out + o * inner, rstd, sizeof(float) * (size_t)inner);
        }
    }
}

CLONES
static void layer_norm_mid_bwd_rows(const float *restrict dy, const float *restrict x, const float *restrict mean,
                                    const float *restrict rstd, const float *restrict w, float *restrict dx,
                                    float *restrict p, int64_t o0, int64_t o1, int64_t d, int64_t inner,
                                    float *restrict s) {
    const float fd = (float)d;
    float *restrict a = s, *restrict c = s + inner;
    for (int64_t o = o0; o < o1; o++) {
        const int64_t base = o * d * inner;
        const float *restrict xo = x + base, *restrict dyo = dy + base, *restrict mo = mean + o * inner,
                          *restrict ro = rstd + o * inner;
        float *restrict dxo = dx + base, *restrict po = p + base;
        for (int64_t i = 0; i < inner; i++) {
            float xh = (xo[i] - mo[i]) * ro[i], g = dyo[i] * w[0];
            a[i] = g;
            c[i] = g * xh;
        }
        for (int64_t j = 1; j < d; j++) {
            const float wj = w[j];
            for (int64_t i = 0; i < inner; i++) {
                float xh = (xo[j * inner + i] - mo[i]) * ro[i], g = dyo[j * inner + i] * wj;
                a[i] = a[i] + g;
                c[i] = c[i] + g * xh;
            }
        }
        for (int64_t i = 0; i < inner; i++) {
            a[i] = a[i] / fd;
            c[i] = c[i] / fd;
        }
        for (int64_t j = 0; j < d; j++) {
            const float wj = w[j];
            for (int64_t i = 0; i < inner; i++) {
                float xh = (xo[j * inner + i] - mo[i]) * ro[i], g = dyo[j * inner + i] * wj;
                po[j * inner + i] = dyo[j * inner + i] * xh;
                dxo[j * inner + i] = ((g - a[i]) - xh * c[i]) * ro[i];
            }
        }
    }
}

/* The outer rows split between up to `nt` threads of torch's OpenMP team (static, contiguous blocks; each thread
 * its own `4 * inner` floats of the scratch `s`, which holds nt of them): each row's values do not depend on the
 * split. One thread below PARALLEL_MIN values. */
static inline int mid_threads(int64_t outer, int64_t d, int64_t inner, int32_t nt) {
    return outer * d * inner >= PARALLEL_MIN && nt > 1 ? (outer < nt ? (int)outer : nt) : 1;
}

/* Inside a parallel region: this thread's block [*o0, *o1) of `outer` rows; returns its index (0, all rows,
 * without OpenMP). */
static inline int team_rows(int64_t outer, int64_t *o0, int64_t *o1) {
    int k = 0, n = 1;
#ifdef _OPENMP
    k = omp_get_thread_num();
    n = omp_get_num_threads();
#endif
    *o0 = outer * k / n;
    *o1 = outer * (k + 1) / n;
    return k;
}

/* Runs BODY on this thread's block [o0, o1) of `outer` rows (k: the thread's index), split between the `team`
 * threads of a parallel region (one without OpenMP). */
#ifdef _OPENMP
#define FOR_TEAM_ROWS(outer, team, BODY)                                   \
    _Pragma("omp parallel num_threads(team) if (team > 1)") {             \
        int64_t o0, o1;                                                    \
        int k = team_rows((outer), &o0, &o1);                              \
        BODY;                                                              \
    }
#else
#define FOR_TEAM_ROWS(outer, team, BODY)                                   \
    {                                                                      \
        (void)(team);                                                      \
        int64_t o0, o1;                                                    \
        int k = team_rows((outer), &o0, &o1);                              \
        BODY;                                                              \
    }
#endif

void bars_layer_norm_mid_fwd(const float *x, const float *w, const float *b, float *y, float *mean_out,
                             float *rstd_out, int64_t outer, int64_t d, int64_t inner, float eps, float *s, int32_t nt) {
    int team = mid_threads(outer, d, inner, nt);
    FOR_TEAM_ROWS(outer, team, layer_norm_mid_fwd_rows(x, w, b, y, mean_out, rstd_out, o0, o1, d, inner, eps,
                                                       s + (int64_t)k * 4 * inner))
}

void bars_layer_norm_mid_bwd(const float *dy, const float *x, const float *mean, const float *rstd, const float *w,
                             float *dx, float *p, int64_t outer, int64_t d, int64_t inner, float *s, int32_t nt) {
    int team = mid_threads(outer, d, inner, nt);
    FOR_TEAM_ROWS(outer, team, layer_norm_mid_bwd_rows(dy, x, mean, rstd, w, dx, p, o0, o1, d, inner,
                                                       s + (int64_t)k * 4 * inner))
}

/* slot_where: each slot index's table (ix / kt) and offset in it (ix % kt), once per call rather than per row. */
static void slot_where(const int64_t *ix, int64_t n, int64_t kt, int64_t *tab, int64_t *off) {
    for (int64_t i = 0; i < n; i++) {
        tab[i] = ix[i] / kt;
        off[i] = ix[i] % kt;
    }
}

/* SCATTER_PAIR: row i's gradients of pair q's two slots, g_val * partner each (both pair-kernel backwards). */
#define SCATTER_PAIR(T, g_val)                                                                                       \
    do {                                                                                                            \
        const T *restrict l = xs[lt[q]] + i * rs + lo[q] * d, *restrict r = xs[rt[q]] + i * rs + ro[q] * d;         \
        T *restrict gl = gxs[lt[q]] + i * rs + lo[q] * d, *restrict gr = gxs[rt[q]] + i * rs + ro[q] * d;           \
        const T gv = (g_val);                                                                                       \
        for (int64_t j = 0; j < d; j++) {                                                                           \
            gl[j] = gv * r[j];                                                                                      \
            gr[j] = gv * l[j];                                                                                      \
        }                                                                                                           \
    } while (0)

/* bars_pair_dot_sum_{f32,f64} / bars_pair_scatter_{f32,f64}: FFM's pairwise term over the slot embeddings of a
 * row held in n tables xs[t]: [rows, kt, d] contiguous (slot k = xs[k / kt][row, k % kt]: FFM's F - 1 separate
 * embedding tables read in place, or one [rows, k, d] array), pairs (left[q], right[q]) of slot indices, each slot
 * in at most one pair. Forward: out_i = sum_q <x_i[left_q], x_i[right_q]>, every dot product and the sum over
 * pairs taken in sequence (no fused multiply-add), as the torch fallback in bars.models.layers.kernels computes
 * them, so both give the same bits. Backward, into gxs shaped as xs: gx_i[left_q] = g_i * x_i[right_q],
 * gx_i[right_q] = g_i * x_i[left_q] (one product each: exact in both paths); slots in no pair are zeroed when `zero`
 * is set. No stacked copy of the tables, no [rows, pairs, d] products and no gathers: FuxiCTR's loop over 741
 * pairs at Criteo's 39 fields and the gather-multiply-sum it replaces both write and read them (~0.5 s of a CPU
 * step each way). `where` (4p int64, caller-owned) receives each pair slot's table and offset. */
#define PAIR_DOT(T, SUFFIX)                                                                                         \
    CLONES                                                                                                          \
    void bars_pair_dot_sum_##SUFFIX(const T *const *xs, int64_t kt, const int64_t *left, const int64_t *right,     \
                                    int64_t p, int64_t rows, int64_t d, int64_t *where, T *restrict out) {          \
        int64_t *lt = where, *lo = lt + p, *rt = lo + p, *ro = rt + p;                                              \
        slot_where(left, p, kt, lt, lo);                                                                            \
        slot_where(right, p, kt, rt, ro);                                                                           \
        const int64_t rs = kt * d;                                                                                  \
        for (int64_t i = 0; i < rows; i++) {                                                                        \
            T acc = 0;                                                                                              \
            for (int64_t q = 0; q < p; q++) {                                                                       \
                const T *restrict l = xs[lt[q]] + i * rs + lo[q] * d, *restrict r = xs[rt[q]] + i * rs + ro[q] * d; \
                T dot = 0;                                                                                          \
                for (int64_t j = 0; j < d; j++) dot = dot + l[j] * r[j];                                            \
                acc = acc + dot;                                                                                    \
            }                                                                                                       \
            out[i] = acc;                                                                                           \
        }                                                                                                           \
    }                                                                                                               \
    CLONES                                                                                                          \
    void bars_pair_scatter_##SUFFIX(const T *const *xs, int64_t n, int64_t kt, const T *restrict g,                \
                                    const int64_t *left, const int64_t *right, int64_t p, int64_t rows, int64_t d,  \
                                    int32_t zero, int64_t *where, T *const *gxs) {                                  \
        int64_t *lt = where, *lo = lt + p, *rt = lo + p, *ro = rt + p;                                              \
        slot_where(left, p, kt, lt, lo);                                                                            \
        slot_where(right, p, kt, rt, ro);                                                                           \
        const int64_t rs = kt * d;                                                                                  \
        for (int64_t i = 0; i < rows; i++) {                                                                        \
            const T gi = g[i];                                                                                      \
            if (zero)                                                                                               \
                for (int64_t t = 0; t < n; t++)                                                                     \
                    for (int64_t j = 0; j < rs; j++) gxs[t][i * rs + j] = 0;                                        \
            for (int64_t q = 0; q < p; q++) SCATTER_PAIR(T, gi);                                                    \
        }                                                                                                           \
    }

PAIR_DOT(float, f32)
PAIR_DOT(double, f64)

/* bars_select_pair_dots_{f32,f64} / bars_select_pair_scatter_{f32,f64}: ONN's DNN input from the slot embeddings
 * of a row held in n tables xs[t]: [rows, kt, d] contiguous (slot k = xs[k / kt][row, k % kt]; ONN's F separate
 * embedding tables without stacking them, or one [rows, k, d] array): out_i = [x_i[sel_0], ..., x_i[sel_{m-1}],
 * <x_i[left_0], x_i[right_0]>, ..., <x_i[left_{p-1}], x_i[right_{p-1}]>] ([rows, m * d + p]); each dot product taken
 * in sequence as in bars_pair_dot_sum. The selected slots and the pairs' slots are all distinct. Backward, into
 * gxs shaped as xs: gx_i[sel_s] = g_i's s-th block, gx_i[left_q] = g_iq * x_i[right_q], gx_i[right_q] = g_iq *
 * x_i[left_q]; other slots are zeroed when `zero` is set. Replaces the stacked [rows, k, d] copy, the
 * [rows, pairs, d] gathers and products, their sum and the concatenation, and in the backward an index_put into a
 * zero [rows, k, d] gradient: each a pass over hundreds of MB (and as many page faults) at Criteo's shape.
 * `where` (2 * (m + 2p) int64, caller-owned) receives each slot's table and offset. */

/* SELECT_WHERE: the selected and paired slots' tables and offsets (in `where`), the output row's width w and a
 * table row's stride rs (both select-pair kernels). */
#define SELECT_WHERE                                                                                                \
    int64_t *st = where, *so = st + m, *lt = so + m, *lo = lt + p, *rt = lo + p, *ro = rt + p;                      \
    slot_where(sel, m, kt, st, so);                                                                                 \
    slot_where(left, p, kt, lt, lo);                                                                                \
    slot_where(right, p, kt, rt, ro);                                                                               \
    const int64_t w = m * d + p, rs = kt * d

#define SELECT_PAIR_DOT(T, SUFFIX)                                                                                  \
    CLONES                                                                                                          \
    void bars_select_pair_dots_##SUFFIX(const T *const *xs, int64_t kt, const int64_t *sel, int64_t m,             \
                                        const int64_t *left, const int64_t *right, int64_t p, int64_t rows,         \
                                        int64_t d, int64_t *where, T *restrict out) {                               \
        SELECT_WHERE;                                                                                               \
        for (int64_t i = 0; i < rows; i++) {                                                                        \
            T *restrict orow = out + i * w;                                                                         \
            for (int64_t s = 0; s < m; s++) {                                                                       \
                const T *restrict src = xs[st[s]] + i * rs + so[s] * d;                                             \
                for (int64_t j = 0; j < d; j++) orow[s * d + j] = src[j];                                           \
            }                                                                                                       \
            for (int64_t q = 0; q < p; q++) {                                                                       \
                const T *restrict l = xs[lt[q]] + i * rs + lo[q] * d, *restrict r = xs[rt[q]] + i * rs + ro[q] * d; \
                T dot = 0;                                                                                          \
                for (int64_t j = 0; j < d; j++) dot = dot + l[j] * r[j];                                            \
                orow[m * d + q] = dot;                                                                              \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
    CLONES                                                                                                          \
    void bars_select_pair_scatter_##SUFFIX(const T *const *xs, int64_t n, int64_t kt, const T *restrict g,         \
                                           const int64_t *sel, int64_t m, const int64_t *left,                      \
                                           const int64_t *right, int64_t p, int64_t rows, int64_t d, int32_t zero,  \
                                           int64_t *where, T *const *gxs) {                                         \
        SELECT_WHERE;                                                                                               \
        for (int64_t i = 0; i < rows; i++) {                                                                        \
            const T *restrict grow_in = g + i * w;                                                                  \
            if (zero)                                                                                               \
                for (int64_t t = 0; t < n; t++)                                                                     \
                    for (int64_t j = 0; j < rs; j++) gxs[t][i * rs + j] = 0;                                        \
            for (int64_t s = 0; s < m; s++) {                                                                       \
                T *restrict dst = gxs[st[s]] + i * rs + so[s] * d;                                                  \
                for (int64_t j = 0; j < d; j++) dst[j] = grow_in[s * d + j];                                        \
            }                                                                                                       \
            for (int64_t q = 0; q < p; q++) SCATTER_PAIR(T, grow_in[m * d + q]);                                    \
        }                                                                                                           \
    }

SELECT_PAIR_DOT(float, f32)
SELECT_PAIR_DOT(double, f64)

/* bars_pair_products_{f32,f64} / bars_pair_products_bwd_{f32,f64}: FiBiNET's bilinear pairs, for n (h, e) couples
 * of [rows, f, d] contiguous arrays: out[i, k, q] = h_k[i, left_q] * e_k[i, right_q] ([rows, n, p, d], the MLP's
 * input as FiBiNET concatenates it); one product each, exact in both paths. Backward from zero, pairs in order:
 * gh_k[i, left_q] += g[i, k, q] * e_k[i, right_q], ge_k[i, right_q] += g[i, k, q] * h_k[i, left_q] (the torch
 * fallback's index_add_ adds in the same order). Replaces two [rows, p, d] gathers, their product and the
 * concatenation forward, and the gathers' backward (index_add_ along a middle axis) at Criteo's 741 pairs. */
#define PAIR_PRODUCTS(T, SUFFIX)                                                                                    \
    CLONES                                                                                                          \
    void bars_pair_products_##SUFFIX(const T *const *hs, const T *const *es, int64_t n, const int64_t *left,       \
                                     const int64_t *right, int64_t p, int64_t rows, int64_t f, int64_t d,           \
                                     T *restrict out) {                                                             \
        for (int64_t i = 0; i < rows; i++)                                                                          \
            for (int64_t k = 0; k < n; k++) {                                                                       \
                const T *restrict h = hs[k] + i * f * d, *restrict e = es[k] + i * f * d;                           \
                T *restrict o = out + (i * n + k) * p * d;                                                          \
                for (int64_t q = 0; q < p; q++) {                                                                   \
                    const T *restrict l = h + left[q] * d, *restrict r = e + right[q] * d;                          \
                    for (int64_t j = 0; j < d; j++) o[q * d + j] = l[j] * r[j];                                     \
                }                                                                                                   \
            }                                                                                                       \
    }                                                                                                               \
    CLONES                                                                                                          \
    void bars_pair_products_bwd_##SUFFIX(const T *const *hs, const T *const *es, int64_t n, const T *restrict g,   \
                                         const int64_t *left, const int64_t *right, int64_t p, int64_t rows,        \
                                         int64_t f, int64_t d, T *const *ghs, T *const *ges) {                      \
        for (int64_t i = 0; i < rows; i++)                                                                          \
            for (int64_t k = 0; k < n; k++) {                                                                       \
                const T *restrict h = hs[k] + i * f * d, *restrict e = es[k] + i * f * d;                           \
                T *restrict gh = ghs[k] + i * f * d, *restrict ge = ges[k] + i * f * d;                             \
                const T *restrict gi = g + (i * n + k) * p * d;                                                     \
                for (int64_t j = 0; j < f * d; j++) {                                                               \
                    gh[j] = 0;                                                                                      \
                    ge[j] = 0;                                                                                      \
                }                                                                                                   \
                for (int64_t q = 0; q < p; q++) {                                                                   \
                    const T *restrict l = h + left[q] * d, *restrict r = e + right[q] * d;                          \
                    T *restrict gl = gh + left[q] * d, *restrict gr = ge + right[q] * d;                            \
                    const T *restrict gq = gi + q * d;                                                              \
                    for (int64_t j = 0; j < d; j++) {                                                               \
                        gl[j] = gl[j] + gq[j] * r[j];                                                               \
                        gr[j] = gr[j] + gq[j] * l[j];                                                               \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
    }

PAIR_PRODUCTS(float, f32)
PAIR_PRODUCTS(double, f64)

/* bars_kmax_index_{f32,f64}: CCPM's k-max pooling index over the last axis of a [rows, n] contiguous array
 * (0 < k < n): the positions of each row's k largest values, ascending, in index[rows, k]. That is
 * topk(k).indices.sort() wherever the k largest are one set, i.e. the k-th largest value is strictly greater than the
 * (k+1)-th and the row has no NaN; a row where either fails (a tie at the boundary, which topk breaks by its own
 * selection algorithm, or a NaN, which topk ranks above everything) gets flag[row] = 1 and is left to topk by the
 * caller (bars.models.layers.kernels.kmax_index), so the result is topk's in every case. Per row, without branches
 * on the data: each value's rank r_i = #{j : x_j > x_i}; x_i is among the k largest iff r_i < k, and exactly k
 * values pass iff the k largest are one set. Rows longer than KMAX_BUF are all flagged. */
#define KMAX_BUF 64
#define KMAX_INDEX(T, SUFFIX)                                                                                       \
    CLONES                                                                                                          \
    void bars_kmax_index_##SUFFIX(const T *restrict x, int64_t rows, int64_t n, int64_t k, int64_t *restrict index, \
                                  uint8_t *restrict flag) {                                                         \
        int64_t buf[KMAX_BUF];                                                                                      \
        T row[KMAX_BUF];                                                                                            \
        int32_t above[KMAX_BUF];                                                                                    \
        const int64_t np = (n + 7) / 8 * 8;                                                                         \
        for (int64_t r = 0; r < rows; r++) {                                                                        \
            const T *restrict xr = x + r * n;                                                                       \
            flag[r] = 1;                                                                                            \
            if (n > KMAX_BUF) continue;                                                                             \
            int32_t nan = 0;                                                                                        \
            for (int64_t i = 0; i < n; i++) nan |= xr[i] != xr[i];                                                  \
            if (nan) continue;                                                                                      \
            for (int64_t i = 0; i < n; i++) row[i] = xr[i];                                                         \
            for (int64_t i = n; i < np; i++) row[i] = -INFINITY; /* never above anything: blocks of 8 */           \
            for (int64_t i = 0; i < np; i++) above[i] = 0;                                                          \
            for (int64_t j = 0; j < n; j++) {                                                                       \
                T v = row[j];                                                                                       \
                for (int64_t i = 0; i < np; i++) above[i] += v > row[i];                                            \
            }                                                                                                       \
            int64_t c = 0;                                                                                          \
            for (int64_t i = 0; i < n; i++) {                                                                       \
                buf[c] = i;                                                                                         \
                c += above[i] < k;                                                                                  \
            }                                                                                                       \
            if (c != k) continue;                                                                                   \
            memcpy(index + r * k, buf, sizeof(int64_t) * (size_t)k);                                                \
            flag[r] = 0;                                                                                            \
        }                                                                                                           \
    }

KMAX_INDEX(float, f32)
KMAX_INDEX(double, f64)

/* bars_gated_cross_{fwd,bwd}: the element-wise part of one gated cross layer (bars.models.layers.GatedCrossNet)
 * on float32 rows, in the order of its torch fallback (bars.models.layers.kernels.gated_cross_*), so the same bits:
 * z [rows, 2d] (W x | W_g x, contiguous), s [rows, d] = sigmoid(z[:, d:]) (torch's), bias [d], x0 and x [rows, d].
 *   forward:  out = ((x0 * (z_w + bias)) * s) + x
 *   backward: gz[:, :d] = (go * s) * x0;  gz[:, d:] = ((go * (x0 * h)) * (1 - s)) * s;  gx0 = (go * s) * h
 *             (h = z_w + bias; the second is torch's sigmoid_backward of go * (x0 * h)).
 * One pass over the rows each way where torch's ops take five forward and eight backward (and a cat). */
CLONES
void bars_gated_cross_fwd(const float *restrict z, const float *restrict s, const float *restrict bias,
                          const float *restrict x0, const float *restrict x, float *restrict out, int64_t rows,
                          int64_t d) {
    for (int64_t r = 0; r < rows; r++) {
        const float *zw = z + r * 2 * d, *sr = s + r * d, *ar = x0 + r * d, *xr = x + r * d;
        float *o = out + r * d;
        for (int64_t j = 0; j < d; j++) o[j] = ((ar[j] * (zw[j] + bias[j])) * sr[j]) + xr[j];
    }
}

CLONES
void bars_gated_cross_bwd(const float *restrict go, const float *restrict z, const float *restrict s,
                          const float *restrict bias, const float *restrict x0, float *restrict gz,
                          float *restrict gx0, int64_t rows, int64_t d) {
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = go + r * d, *zw = z + r * 2 * d, *sr = s + r * d, *ar = x0 + r * d;
        float *gw = gz + r * 2 * d, *gg = gw + d, *ga = gx0 + r * d;
        for (int64_t j = 0; j < d; j++) {
            float h = zw[j] + bias[j], gs = gr[j] * sr[j];
            gw[j] = gs * ar[j];
            ga[j] = gs * h;
            gg[j] = ((gr[j] * (ar[j] * h)) * (1.0f - sr[j])) * sr[j];
        }
    }
}

/* bars_self_mask_cross_{fwd,bwd}: the element-wise part of one self-mask cross layer (FCN and ECN;
 * bars.models.layers.SelfMaskCrossNet) on float32 rows of width d = 2 k, in the order of its torch fallback
 * (bars.models.layers.exponential_cross.SelfMaskMix), so the same bits: h and ln [rows, k] (the layer's projection and
 * its LayerNorm, or h again without one), bias [d], base and x [rows, d] (base: x0 in the linear network, x in the
 * exponential one; m = relu(ln), NaN kept as torch's relu keeps it).
 *   forward:  c = [h, h * m] + bias;  out = (base * c) + x
 *   backward: gc = go * base;  gbase = go * c;  gh = gc[:, :k] + gc[:, k:] * m;  gln = 0 where m <= 0, else
 *             gc[:, k:] * h (torch's threshold_backward of the relu, through which a NaN m passes the gradient).
 * One pass over the rows each way where torch's ops take six forward and nine backward (and a cat). */
static inline float relu_t(float v) { return v < 0.0f ? 0.0f : v; } /* torch.relu: -0 and NaN kept */

CLONES
void bars_self_mask_cross_fwd(const float *restrict h, const float *restrict ln, const float *restrict bias,
                              const float *restrict base, const float *restrict x, float *restrict out, int64_t rows,
                              int64_t k) {
    const int64_t d = 2 * k;
#pragma omp parallel for schedule(static) if (rows * d >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *hr = h + r * k, *lr = ln + r * k, *br = base + r * d, *xr = x + r * d;
        float *o = out + r * d;
        for (int64_t j = 0; j < k; j++) o[j] = (br[j] * (hr[j] + bias[j])) + xr[j];
        for (int64_t j = 0; j < k; j++)
            o[k + j] = (br[k + j] * ((hr[j] * relu_t(lr[j])) + bias[k + j])) + xr[k + j];
    }
}

CLONES
void bars_self_mask_cross_bwd(const float *restrict go, const float *restrict h, const float *restrict ln,
                              const float *restrict bias, const float *restrict base, float *restrict gc,
                              float *restrict gbase, float *restrict gh, float *restrict gln, int64_t rows, int64_t k) {
    const int64_t d = 2 * k;
#pragma omp parallel for schedule(static) if (rows * d >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = go + r * d, *hr = h + r * k, *lr = ln + r * k, *br = base + r * d;
        float *gcr = gc + r * d, *gbr = gbase + r * d, *ghr = gh + r * k, *glr = gln + r * k;
        for (int64_t j = 0; j < k; j++) {
            gcr[j] = gr[j] * br[j];
            gbr[j] = gr[j] * (hr[j] + bias[j]);
        }
        for (int64_t j = 0; j < k; j++) {
            float m = relu_t(lr[j]), g2 = gr[k + j] * br[k + j];
            gcr[k + j] = g2;
            gbr[k + j] = gr[k + j] * ((hr[j] * m) + bias[k + j]);
            ghr[j] = gcr[j] + (g2 * m);
            glr[j] = m <= 0.0f ? 0.0f : g2 * hr[j]; /* torch's threshold_backward: NaN passes */
        }
    }
}

/* bars_euler_*: the element-wise parts of EulerNet's interaction layer (bars.models.layers.EulerInteractionLayer,
 * transposed layout; euler.EulerPolar / EulerCombine), computed as their torch fallbacks in euler.py do, in the
 * same order and operations. r, p [rows, n]; polar and its gradient [2, rows, n] (the log-moduli, then the phases).
 *   polar_fwd:   polar[0] = (r * r + p * p) + 1e-8   (the log and the 0.5, and atan2 into polar[1]: torch's)
 *   polar_bwd:   s = r * r + p * p, q = s + 1e-8, a = (g_lam * 0.5) / q, c = 1 / s
 *                gr = (a * r + a * r) + (g_theta * -p) * c,  gp = (a * p + a * p) + (g_theta * r) * c
 * mixed and its gradient [2, rows, m] (as polar); lin, out and their gradients [2, rows, m] (the r part, then the
 * p part).
 *   combine_pre: e = mixed[0] + bias_lam, t = mixed[1] + bias_theta   (exp, cos and sin: torch's)
 *   combine_fwd: out_r = relu(lin_r) + e * cos,  out_p = relu(lin_p) + e * sin   (e = exp(...))
 *   combine_bwd: glin = g where relu(lin) > 0 or is NaN, else 0;  ge = g_r * cos + g_p * sin;
 *                gmixed[0] = ge * e,  gmixed[1] = (g_r * e) * -sin + (g_p * e) * cos
 * One pass each where autograd's ops take six to twelve. */
CLONES
void bars_euler_polar_fwd(const float *restrict r, const float *restrict p, float *restrict polar, int64_t rows,
                          int64_t n) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (rows * n >= PARALLEL_MIN)
#endif
    for (int64_t b = 0; b < rows; b++) {
        const float *rb = r + b * n, *pb = p + b * n;
        float *q = polar + b * n;
        for (int64_t j = 0; j < n; j++) q[j] = (rb[j] * rb[j] + pb[j] * pb[j]) + 1e-8f;
    }
}

CLONES
void bars_euler_polar_bwd(const float *restrict g, const float *restrict r, const float *restrict p,
                          float *restrict gr, float *restrict gp, int64_t rows, int64_t n) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (rows * n >= PARALLEL_MIN)
#endif
    for (int64_t b = 0; b < rows; b++) {
        const float *gl = g + b * n, *gt = gl + rows * n, *rb = r + b * n, *pb = p + b * n;
        float *ro = gr + b * n, *po = gp + b * n;
        for (int64_t j = 0; j < n; j++) {
            float x = rb[j], y = pb[j];
            float s = x * x + y * y;
            float a = (gl[j] * 0.5f) / (s + 1e-8f), c = 1.0f / s;
            ro[j] = (a * x + a * x) + (gt[j] * -y) * c;
            po[j] = (a * y + a * y) + (gt[j] * x) * c;
        }
    }
}

CLONES
void bars_euler_combine_pre(const float *restrict mixed, const float *restrict bl, const float *restrict bt,
                            float *restrict e, float *restrict t, int64_t rows, int64_t m) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (rows * m >= PARALLEL_MIN)
#endif
    for (int64_t b = 0; b < rows; b++) {
        const float *ml = mixed + b * m, *mt = ml + rows * m;
        float *eb = e + b * m, *tb = t + b * m;
        for (int64_t j = 0; j < m; j++) {
            eb[j] = ml[j] + bl[j];
            tb[j] = mt[j] + bt[j];
        }
    }
}

static inline float relu_f(float x) { return x > 0.0f || x != x ? x : 0.0f; }

CLONES
void bars_euler_combine_fwd(const float *restrict lin, const float *restrict e, const float *restrict c,
                            const float *restrict s, float *restrict out, int64_t rows, int64_t m) {
    int64_t total = rows * m;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (total >= PARALLEL_MIN)
#endif
    for (int64_t b = 0; b < rows; b++) {
        for (int64_t i = b * m; i < (b + 1) * m; i++) {
            out[i] = relu_f(lin[i]) + e[i] * c[i];
            out[total + i] = relu_f(lin[total + i]) + e[i] * s[i];
        }
    }
}

CLONES
void bars_euler_combine_bwd(const float *restrict g, const float *restrict lin, const float *restrict e,
                            const float *restrict c, const float *restrict s, float *restrict glin,
                            float *restrict gmixed, int64_t rows, int64_t m) {
    int64_t total = rows * m;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (total >= PARALLEL_MIN)
#endif
    for (int64_t b = 0; b < rows; b++) {
        float *gl = gmixed + b * m, *gt = gl + total;
        for (int64_t j = 0; j < m; j++) {
            int64_t i = b * m + j;
            float gr = g[i], gp = g[total + i], lr = lin[i], lp = lin[total + i];
            glin[i] = lr > 0.0f || lr != lr ? gr : 0.0f;
            glin[total + i] = lp > 0.0f || lp != lp ? gp : 0.0f;
            float ei = e[i], ci = c[i], si = s[i];
            gl[j] = (gr * ci + gp * si) * ei;
            gt[j] = (gr * ei) * -si + (gp * ei) * ci;
        }
    }
}

/* bars_euler_embed_{fwd,bwd}: EulerNet's input (bars.models.layers.EulerNetwork, euler.EulerEmbed) on the
 * transposed layout [rows, d, f] (n = d * f values a row, field j % f): with c, s = cos and sin of the embeddings
 * (torch's), r = mu[field] * c and p = mu[field] * s; backward ge = (g_r * mu) * -s + (g_p * mu) * c and
 * t = g_r * c + g_p * s (summed over rows and d by torch: mu's gradient). */
CLONES
void bars_euler_embed_fwd(const float *restrict c, const float *restrict s, const float *restrict mu,
                          float *restrict r, float *restrict p, int64_t rows, int64_t n, int64_t f) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (rows * n >= PARALLEL_MIN)
#endif
    for (int64_t b = 0; b < rows; b++) {
        const float *cb = c + b * n, *sb = s + b * n;
        float *rb = r + b * n, *pb = p + b * n;
        for (int64_t j0 = 0; j0 < n; j0 += f)
            for (int64_t k = 0; k < f; k++) {
                rb[j0 + k] = mu[k] * cb[j0 + k];
                pb[j0 + k] = mu[k] * sb[j0 + k];
            }
    }
}

CLONES
void bars_euler_embed_bwd(const float *restrict gr, const float *restrict gp, const float *restrict c,
                          const float *restrict s, const float *restrict mu, float *restrict ge, float *restrict t,
                          int64_t rows, int64_t n, int64_t f) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (rows * n >= PARALLEL_MIN)
#endif
    for (int64_t b = 0; b < rows; b++) {
        for (int64_t j0 = b * n; j0 < (b + 1) * n; j0 += f)
            for (int64_t k = 0; k < f; k++) {
                int64_t i = j0 + k;
                float x = gr[i], y = gp[i];
                ge[i] = (x * mu[k]) * -s[i] + (y * mu[k]) * c[i];
                t[i] = x * c[i] + y * s[i];
            }
    }
}

/* bars_lookup_grad_f32: the gradient of a float32 table [rows, d] looked up n times (padded_lookup, index 0 the
 * padding row) with the embedding regularizer's gradient lam * W in it, in the order the unfused step takes: each
 * looked-up row r >= 1 gets ((0 + g_i1) + g_i2) + ... over its lookups in order (index_add_ into zeros), then
 * + W[r] * lam; the padding row 0 + W[0] * lam. On entry out holds W * lam (torch's mul, every row): the rows not
 * looked up keep it. mark [rows] is all zero on entry and on return. Two passes over the n lookups, none over the
 * table. */
#define LOOKAHEAD 32 /* lookups ahead whose rows are prefetched: the table is far larger than the caches */
CLONES
void bars_lookup_grad_f32(const int64_t *restrict idx, int64_t n, const float *restrict g,
                          const float *restrict w, float lam, float *restrict out, uint8_t *restrict mark,
                          int64_t d) {
    for (int64_t i = 0; i < n; i++) {
        int64_t r = idx[i];
        if (i + LOOKAHEAD < n) __builtin_prefetch(out + idx[i + LOOKAHEAD] * d, 1);
        if (r == 0) continue;
        float *o = out + r * d;
        const float *gi = g + i * d;
        if (!mark[r]) {
            mark[r] = 1;
            for (int64_t j = 0; j < d; j++) o[j] = 0.0f + gi[j];
        } else {
            for (int64_t j = 0; j < d; j++) o[j] += gi[j];
        }
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t r = idx[i];
        if (i + LOOKAHEAD < n) {
            int64_t q = idx[i + LOOKAHEAD];
            __builtin_prefetch(out + q * d, 1);
            __builtin_prefetch(w + q * d, 0);
        }
        if (r == 0 || !mark[r]) continue;
        mark[r] = 0;
        float *o = out + r * d;
        const float *wr = w + r * d;
        for (int64_t j = 0; j < d; j++) o[j] = o[j] + wr[j] * lam;
    }
    for (int64_t j = 0; j < d; j++) out[j] = 0.0f + out[j];
}

/* A table's step without its dense gradient (bars.models.layers.table_step): the gradient the unfused step gives a
 * float32 table [rows, d] looked up n times with the regularizer lam * W (bars_lookup_grad_f32's) is, per element,
 *     looked-up row r >= 1:  S[r] + W * lam      S[r] = ((0 + g_i1) + g_i2) + ... over r's lookups in order
 *     row 0 (padding):       0 + W * lam
 *     any other row:         W * lam
 * bars_table_sparse_f32 keeps only the S rows (compact, in order of first lookup: rows_out[k] is the row of S's
 * k-th, slot[r] = k + 1; slot all zero on entry, the caller clears it after the step; a slot that does not point
 * back at its row counts as zero), and returns their count.
 * bars_table_gsq_f32 gives what the looked-up rows add to the squared norm (the clipping test's estimate, see
 * the Python side). bars_table_adam_f32 is torch's fused Adam on it (aten's FusedAdamKernel, float32: the same
 * operations, fused multiply-adds where its vector path has them), bit for bit (tests/test_table_step.py). */
CLONES
int64_t bars_table_sparse_f32(const int64_t *restrict idx, int64_t n, const float *restrict g, int64_t d,
                              int32_t *restrict slot, float *restrict s, int64_t *restrict rows_out) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t r = idx[i];
        if (i + LOOKAHEAD < n) __builtin_prefetch(slot + idx[i + LOOKAHEAD], 1);
        if (r == 0) continue;
        const float *gi = g + i * d;
        int32_t q = slot[r];
        if (q == 0 || q > k || rows_out[q - 1] != r) { /* first lookup of r (a stale slot never writes outside s) */
            float *o = s + k * d;
            slot[r] = (int32_t)(k + 1);
            rows_out[k++] = r;
            for (int64_t j = 0; j < d; j++) o[j] = 0.0f + gi[j];
        } else {
            float *o = s + (int64_t)(q - 1) * d;
            for (int64_t j = 0; j < d; j++) o[j] += gi[j];
        }
    }
    return k;
}

#define TABLE_CHUNK 4096 /* rows per piece of bars_table_adam_f32's pass (split between the threads) */

/* sum over the k looked-up rows of ||S + W * lam||^2 - ||W * lam||^2 (the products rounded to float32 as in the
 * gradient), in double: what the looked-up rows add to the squared norm of lam * W. */
CLONES
double bars_table_gsq_f32(const float *restrict w, int64_t d, float lam, const float *restrict s,
                          const int64_t *restrict rows_in, int64_t k) {
    double lane[16] = {0.0};
    for (int64_t i = 0; i < k; i++) {
        if (i + LOOKAHEAD < k) __builtin_prefetch(w + rows_in[i + LOOKAHEAD] * d, 0);
        const float *wr = w + rows_in[i] * d, *sr = s + i * d;
        int64_t j = 0;
        for (; j + 16 <= d; j += 16)
            for (int l = 0; l < 16; l++) {
                float base = wr[j + l] * lam, gv = sr[j + l] + base;
                lane[l] += (double)gv * (double)gv - (double)base * (double)base;
            }
        for (; j < d; j++) {
            float base = wr[j] * lam, gv = sr[j] + base;
            lane[0] += (double)gv * (double)gv - (double)base * (double)base;
        }
    }
    double acc = 0.0;
    for (int l = 0; l < 16; l++) acc += lane[l];
    return acc;
}

/* torch's fused Adam (float32, no weight decay, no amsgrad) on that gradient, over elements [0, ne) of w, m, v:
 * exp_avg.lerp_(g, 1 - beta1) as fma(w1, g - m, m), exp_avg_sq as fma(c2 * g, g, v * beta2) (aten's vector loop)
 * or, from element tail_at on, fma(v, beta2, (c2 * g) * g) (its scalar loop over the tensor's last numel % width
 * elements, compiled with another contraction), then p + (-step_size * m) / (sqrt(v) / bc2s + eps). The gradient
 * is sr[i] + w[i] * lam (a looked-up row), else 0 + w[i] * lam (pad: the padding row), else w[i] * lam, times
 * scale (the clipping coefficient, 1 when the norm is not reached: a product by 1 changes no bit). */
static inline void table_adam_run(float *restrict w, float *restrict m, float *restrict v, int64_t ne, int64_t tail_at,
                                  float lam, const float *restrict sr, int pad, float scale, float w1, float b2,
                                  float c2, float bc2s, float eps, float nss) {
#define ADAM_ELEM(G, V)                                                                                           \
    {                                                                                                             \
        float gv = (G) * scale, mv = fmaf(w1, gv - m[i], m[i]), vv = (V);                                         \
        m[i] = mv;                                                                                                \
        v[i] = vv;                                                                                                \
        w[i] = w[i] + (nss * mv) / (sqrtf(vv) / bc2s + eps);                                                      \
    }
#define ADAM_LOOPS(G)                                                                                             \
    {                                                                                                             \
        int64_t i = 0;                                                                                            \
        for (; i < tail_at; i++) ADAM_ELEM(G, fmaf(c2 * gv, gv, v[i] * b2))                                       \
        for (; i < ne; i++) ADAM_ELEM(G, fmaf(v[i], b2, (c2 * gv) * gv))                                         \
    }
    if (tail_at > ne) tail_at = ne;
    if (tail_at < 0) tail_at = 0;
    if (sr)
        ADAM_LOOPS(sr[i] + w[i] * lam)
    else if (pad)
        ADAM_LOOPS(0.0f + w[i] * lam)
    else
        ADAM_LOOPS(w[i] * lam)
#undef ADAM_LOOPS
#undef ADAM_ELEM
}

CLONES
void bars_table_adam_f32(float *restrict w, float *restrict m, float *restrict v, int64_t rows, int64_t d, float lam,
                         const int32_t *restrict slot, const float *restrict s, float w1, float b2, float c2,
                         float bc2s, float eps, float nss, int64_t tail, float scale,
                         const int64_t *restrict rows_in, int64_t k) {
    const int64_t per = TABLE_CHUNK, pieces = (rows + per - 1) / per; /* rows per piece */
#pragma omp parallel for schedule(static) if (rows * d >= PARALLEL_MIN)
    for (int64_t c = 0; c < pieces; c++) {
        int64_t r = c * per, r1 = rows - r < per ? rows : r + per;
        while (r < r1) {
            int32_t q = slot[r];
            if (q && (q > k || rows_in[q - 1] != r)) q = 0; /* a stale slot: not looked up in this step */
            if (q || r == 0) { /* one row: looked up, or the padding row */
                const float *sr = q ? s + (int64_t)(q - 1) * d : NULL;
                table_adam_run(w + r * d, m + r * d, v + r * d, d, tail - r * d, lam, sr, r == 0, scale, w1, b2, c2,
                               bc2s, eps, nss);
                r++;
            } else { /* a run of rows not looked up: one flat loop */
                int64_t e = r + 1;
                while (e < r1 && !slot[e]) e++; /* (a stale slot ends the run early: its row is taken alone) */
                table_adam_run(w + r * d, m + r * d, v + r * d, (e - r) * d, tail - r * d, lam, NULL, 0, scale, w1,
                               b2, c2, bc2s, eps, nss);
                r = e;
            }
        }
    }
}

/* The dense gradient (when the clipping test cannot decide, or a second path adds to the table's gradient):
 * out holds W * lam on entry (torch's mul); the looked-up rows and row 0 get the values above. */
CLONES
void bars_table_dense_f32(const float *restrict w, int64_t d, float lam, const float *restrict s,
                          const int64_t *restrict rows_in, int64_t k, float *restrict out) {
    for (int64_t i = 0; i < k; i++) {
        const float *wr = w + rows_in[i] * d, *sr = s + i * d;
        float *o = out + rows_in[i] * d;
        for (int64_t j = 0; j < d; j++) o[j] = sr[j] + wr[j] * lam;
    }
    for (int64_t j = 0; j < d; j++) out[j] = 0.0f + out[j];
}

/* FGCNN's max pooling over rows (convolution.RowMaxPool; torch's MaxPool2d((p, 1), padding=(pad, 0)) on NCHW):
 * x [n, h, w] (n = batch * channels), window j of rows j p - pad .. j p - pad + p - 1, the padding rows skipped.
 * As ATen's CPU max pooling: the first real row of the window starts as the max (ATen starts from -inf with the
 * first real row's index: the same outcome), and a later row takes over when it is greater or NaN. The backward
 * finds that row again from x (saved by the layer; torch keeps an int64 index per output instead), and writes
 * gi = 0 + g there (a -0 gradient gives +0, as ATen's 0 += g), 0 in the window's other rows and in rows of no
 * window. Windows hold at least one real row (the caller checks). The two-row window (p = 2) has a loop of its
 * own: one vector per 16 columns, where the general one keeps a row index per column. */
#define POOL_COLS 64 /* columns per chunk of the general window */
static inline void pool_window(const float *restrict xr, int64_t rows, int64_t w, int64_t d0, int64_t nd,
                               float *restrict m, int32_t *restrict at) {
    for (int64_t d = 0; d < nd; d++) {
        m[d] = xr[d0 + d];
        at[d] = 0;
    }
    for (int64_t r = 1; r < rows; r++)
        for (int64_t d = 0; d < nd; d++) {
            float v = xr[r * w + d0 + d];
            int take = (v > m[d]) | (v != v);
            m[d] = take ? v : m[d];
            at[d] = take ? (int32_t)r : at[d];
        }
}

CLONES
void bars_row_maxpool_fwd(const float *restrict x, float *restrict out, int64_t n, int64_t h, int64_t w, int64_t p,
                          int64_t pad, int64_t ho) {
#pragma omp parallel for schedule(static) if (n * h * w >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < ho; j++) {
            int64_t r0 = j * p - pad, r1 = r0 + p < h ? r0 + p : h;
            if (r0 < 0) r0 = 0;
            const float *xr = x + (i * h + r0) * w;
            float *o = out + (i * ho + j) * w;
            if (r1 - r0 == 2) {
                for (int64_t d = 0; d < w; d++) {
                    float v0 = xr[d], v1 = xr[w + d];
                    o[d] = (v1 > v0) | (v1 != v1) ? v1 : v0;
                }
                continue;
            }
            float m[POOL_COLS];
            int32_t at[POOL_COLS];
            for (int64_t d0 = 0; d0 < w; d0 += POOL_COLS) {
                int64_t nd = w - d0 < POOL_COLS ? w - d0 : POOL_COLS;
                pool_window(xr, r1 - r0, w, d0, nd, m, at);
                for (int64_t d = 0; d < nd; d++) o[d0 + d] = m[d];
            }
        }
}

CLONES
void bars_row_maxpool_bwd(const float *restrict g, const float *restrict x, float *restrict gi, int64_t n, int64_t h,
                          int64_t w, int64_t p, int64_t pad, int64_t ho) {
#pragma omp parallel for schedule(static) if (n * h * w >= PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float *gr = gi + i * h * w;
        int64_t done = 0; /* rows written so far */
        for (int64_t j = 0; j < ho; j++) {
            int64_t r0 = j * p - pad, r1 = r0 + p < h ? r0 + p : h;
            if (r0 < 0) r0 = 0;
            for (; done < r0; done++) memset(gr + done * w, 0, (size_t)w * sizeof(float));
            const float *gs = g + (i * ho + j) * w, *xr = x + (i * h + r0) * w;
            float *o = gr + r0 * w;
            if (r1 - r0 == 2) {
                for (int64_t d = 0; d < w; d++) {
                    float v0 = xr[d], v1 = xr[w + d], v = 0.0f + gs[d];
                    int take = (v1 > v0) | (v1 != v1);
                    o[d] = take ? 0.0f : v;
                    o[w + d] = take ? v : 0.0f;
                }
            } else {
                float m[POOL_COLS];
                int32_t at[POOL_COLS];
                for (int64_t d0 = 0; d0 < w; d0 += POOL_COLS) {
                    int64_t nd = w - d0 < POOL_COLS ? w - d0 : POOL_COLS;
                    pool_window(xr, r1 - r0, w, d0, nd, m, at);
                    for (int64_t r = 0; r < r1 - r0; r++)
                        for (int64_t d = 0; d < nd; d++) o[r * w + d0 + d] = at[d] == r ? 0.0f + gs[d0 + d] : 0.0f;
                }
            }
            done = r1;
        }
        for (; done < h; done++) memset(gr + done * w, 0, (size_t)w * sizeof(float));
    }
}

/* The dense gradient's 2-norm (table_grad.SparseTableGrad.norm), as torch's linalg.vector_norm of dense() computes
 * it in float, without writing it: the elements in flat order squared into `width` lanes (element i into lane
 * i % width, for i below n - n % width; with or without a fused multiply-add: lane_fma), the lanes folded into
 * lane 0 in order, then the last n % width elements added to it one by one (tail_fma), and its square root.
 * Element values as dense(): W * lam, s + W * lam on a looked-up row, 0 + that on row 0. One thread (the order
 * is one sequence per lane). table_grad.norm_order probes width and the two fma flags against torch. */
#define NORM_ADD(a, v, f) ((f) ? fmaf((v), (v), (a)) : (a) + (v) * (v))
typedef float norm_v8 __attribute__((vector_size(32)));
typedef float norm_v16 __attribute__((vector_size(64)));
/* The lanes as vectors, without a fused multiply-add, where the width divides d (no tail; every row starts at
 * lane 0): a run of rows not looked up in one flat loop, a looked-up row (or row 0) with its own values. */
#define NORM_ROWS(V, W)                                                                                           \
    do {                                                                                                          \
        V a = {0}, sc;                                                                                            \
        for (int l = 0; l < (W); l++) sc[l] = lam;                                                                \
        for (int64_t r = 0; r < rows; r++) {                                                                      \
            const float *wr = w + r * d;                                                                          \
            int32_t q = slot[r];                                                                                  \
            const float *sr = q && q <= k && rows_in[q - 1] == r ? s + (int64_t)(q - 1) * d : NULL;               \
            if (!sr && r) {                                                                                       \
                int64_t e = r + 1;                                                                                \
                while (e < rows && !slot[e]) e++; /* (a stale slot ends the run: its row is taken alone) */       \
                for (int64_t c = 0, m = (e - r) * d; c < m; c += (W)) {                                           \
                    V x;                                                                                          \
                    memcpy(&x, wr + c, sizeof x);                                                                 \
                    x = x * sc;                                                                                   \
                    a = a + x * x;                                                                                \
                }                                                                                                 \
                r = e - 1;                                                                                        \
                continue;                                                                                         \
            }                                                                                                     \
            for (int64_t c = 0; c < d; c += (W)) {                                                                \
                V x, y = {0};                                                                                     \
                memcpy(&x, wr + c, sizeof x);                                                                     \
                x = x * sc;                                                                                       \
                if (sr) {                                                                                         \
                    memcpy(&y, sr + c, sizeof y);                                                                 \
                    x = y + x;                                                                                    \
                }                                                                                                 \
                if (!r) {                                                                                         \
                    V z = {0};                                                                                    \
                    x = z + x;                                                                                    \
                }                                                                                                 \
                a = a + x * x;                                                                                    \
            }                                                                                                     \
        }                                                                                                         \
        float buf = a[0];                                                                                         \
        for (int l = 1; l < (W); l++) buf = buf + a[l];                                                           \
        return sqrtf(buf);                                                                                        \
    } while (0)

CLONES
float bars_table_norm_f32(const float *restrict w, int64_t rows, int64_t d, float lam, const int32_t *restrict slot,
                          const float *restrict s, const int64_t *restrict rows_in, int64_t k, int64_t width,
                          int32_t lane_fma, int32_t tail_fma) {
    if (!lane_fma && width == 8 && d % 8 == 0) NORM_ROWS(norm_v8, 8);
    if (!lane_fma && width == 16 && d % 16 == 0) NORM_ROWS(norm_v16, 16);
    float acc[16] = {0};
    const int64_t n = rows * d, vec_end = n - n % width;
    float buf = 0.0f;
    int folded = 0;
    int64_t i = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *wr = w + r * d;
        int32_t q = slot[r];
        const float *sr = q && q <= k && rows_in[q - 1] == r ? s + (int64_t)(q - 1) * d : NULL;
        for (int64_t j = 0; j < d; j++, i++) {
            float v = sr ? sr[j] + wr[j] * lam : wr[j] * lam;
            if (!r) v = 0.0f + v;
            if (i < vec_end) {
                acc[i % width] = NORM_ADD(acc[i % width], v, lane_fma);
                continue;
            }
            if (!folded) {
                buf = acc[0];
                for (int l = 1; l < width; l++) buf = buf + acc[l];
                folded = 1;
            }
            buf = NORM_ADD(buf, v, tail_fma);
        }
    }
    if (!folded) {
        buf = acc[0];
        for (int l = 1; l < width; l++) buf = buf + acc[l];
    }
    return sqrtf(buf);
}
#undef NORM_ROWS
#undef NORM_ADD

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "optional CPU kernels of bars.models", -1,
                                    NULL};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
