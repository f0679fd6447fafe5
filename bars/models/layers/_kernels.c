/* Optional CPU kernels of bars.models (loaded with ctypes by bars.models.layers.kernels; built by setup.py where
 * a C compiler exists, skipped elsewhere). Each kernel computes exactly what the layer's torch fallback computes,
 * bit for bit (tests/test_layers.py checks both paths), so a model's numbers never depend on whether it was built.
 *
 * bars_dropout_mask: the mask of bars.models.layers.Dropout / ReLUDropout on a float32 tensor of n elements.
 * Uniform bits: splitmix64 of a counter, z_j = mix(key + (j + 1) * GAMMA) for j = 0, 1, ... (key: one draw of
 * torch's seeded generator per call); element 4j + k reads bits 16k..16k+15 of z_j as a signed 16-bit integer b
 * (the little-endian int16 view of the int64 array z) and is kept when b >= threshold (and, with relu, x > 0).
 * mask = kept ? scale : 0 and out = x * mask, both written (the backward pass is grad * mask). */
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define GAMMA 0x9E3779B97F4A7C15ULL
#define BLOCK 1024 /* 64-bit draws per block: 4096 elements */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(_M_X64)) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define CLONES
#endif

/* Single-threaded: with torch's OpenMP worker spinning on the other core after each parallel op, a second
 * thread here made the call slower on two cores (1.50 ms against 1.35 ms for 4096 x 400). */
CLONES
void bars_dropout_mask(const float *x, float *out, float *mask, int64_t n, uint64_t key, int32_t threshold,
                       float scale, int32_t relu) {
    uint64_t z[BLOCK];
    int16_t b[4 * BLOCK];
    for (int64_t g0 = 0; 4 * g0 < n; g0 += BLOCK) {
        int64_t i0 = 4 * g0, ne = n - i0;
        if (ne > 4 * BLOCK) ne = 4 * BLOCK;
        int64_t ng = (ne + 3) / 4;
        for (int64_t j = 0; j < ng; j++) {
            uint64_t v = key + (uint64_t)(g0 + j + 1) * GAMMA;
            v = (v ^ (v >> 30)) * 0xBF58476D1CE4E5B9ULL;
            v = (v ^ (v >> 27)) * 0x94D049BB133111EBULL;
            z[j] = v ^ (v >> 31);
        }
        memcpy(b, z, sizeof(uint64_t) * (size_t)ng); /* the int16 view, little-endian as the fallback's */
        const float *xs = x + i0;
        float *os = out + i0, *ms = mask + i0;
        if (relu) {
            for (int64_t i = 0; i < ne; i++) {
                float m = (b[i] >= threshold && xs[i] > 0.0f) ? scale : 0.0f;
                ms[i] = m;
                os[i] = xs[i] * m;
            }
        } else {
            for (int64_t i = 0; i < ne; i++) {
                float m = b[i] >= threshold ? scale : 0.0f;
                ms[i] = m;
                os[i] = xs[i] * m;
            }
        }
    }
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "optional CPU kernels of bars.models", -1,
                                    NULL};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
