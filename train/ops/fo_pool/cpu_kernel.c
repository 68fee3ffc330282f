/* fo-pooling's sequential core on the CPU: c_t = f_t c_{t-1} + (1 - f_t) z_t, and its backward.

Built and loaded by cpu_kernel.py (cc -O3 -march=native -ffp-contract=off -fPIC -shared: no
-ffast-math and no implicit fma, so results round as written, with any compiler). Plain C, no Python or
torch headers. Tensors are contiguous [B, T, D], states [B, D]; each function does the channels b in
[b0, b1), d in [d0, d1), so that the caller can split the work across threads. Time runs in the
outer loop and the contiguous channels in the inner one, which the compiler vectorises: the
recurrence is sequential in t only. Gate activations, zoneout and the sigmoid derivative of o stay
in torch, whose vectorised tanh/sigmoid beat scalar libm calls.
*/
#include <math.h>
#include <stdint.h>

/* One step, lerp(s, e, w) = s + w (e - s), as torch's vectorised CPU lerp computes it: one fma, on
   the side that stays accurate for w near 1 - so results match torch.lerp (the PyTorch path). */
#define LERP(real, FMA, ABS, s, e, w) \
    FMA(ABS(w) < (real)0.5 ? (w) : (w) - 1, (e) - (s), ABS(w) < (real)0.5 ? (s) : (e))

/* Forward: c[b, t] = lerp(z[b, t], c[b, t - 1], f[b, t]), from c0 (zeros when NULL). */
#define FORWARD(name, real, FMA, ABS)                                                             \
void name(const real *restrict z, const real *restrict f, const real *restrict c0,                \
          real *restrict c, int64_t T, int64_t D, int64_t b0, int64_t b1, int64_t d0, int64_t d1) { \
    for (int64_t b = b0; b < b1; b++) {                                                           \
        const real *prev = c0 ? c0 + b * D : 0;                                                   \
        for (int64_t t = 0; t < T; t++) {                                                         \
            const real *zt = z + (b * T + t) * D, *ft = f + (b * T + t) * D;                      \
            real *ct = c + (b * T + t) * D;                                                       \
            if (prev)                                                                             \
                for (int64_t d = d0; d < d1; d++) ct[d] = LERP(real, FMA, ABS, zt[d], prev[d], ft[d]); \
            else                                                                                  \
                for (int64_t d = d0; d < d1; d++) ct[d] = LERP(real, FMA, ABS, zt[d], (real)0, ft[d]); \
            prev = ct;                                                                            \
        }                                                                                         \
    }                                                                                             \
}

/* Backward, one sweep back in time. u, the gradient reaching c_{t-1}, starts as gc (dL/dc_T) and
   lives in dc0's row, which it ends up as:
       g_t = gh_t + u,  dz_t = g_t (1 - f_t),  df_t = g_t (c_{t-1} - z_t),  u = f_t g_t.
   With o (h = o c; NULL: h = c), gh is dL/dh: the sweep also writes go = gh c (dL/do before the
   sigmoid derivative) and takes g_t = gh_t o_t + u, which saves torch two passes over [B, T, D]. */
#define BACKWARD(name, real)                                                                      \
void name(const real *restrict z, const real *restrict f, const real *restrict c,                 \
          const real *restrict c0, const real *restrict gh, const real *restrict gc,              \
          const real *restrict o, real *restrict dz, real *restrict df, real *restrict go,        \
          real *restrict dc0, int64_t T, int64_t D, int64_t b0, int64_t b1, int64_t d0, int64_t d1) { \
    for (int64_t b = b0; b < b1; b++) {                                                           \
        real *u = dc0 + b * D;                                                                    \
        for (int64_t d = d0; d < d1; d++) u[d] = gc[b * D + d];                                   \
        for (int64_t t = T - 1; t >= 0; t--) {                                                    \
            int64_t row = (b * T + t) * D;                                                        \
            const real *prev = t ? c + row - D : (c0 ? c0 + b * D : 0);                          \
            for (int64_t d = d0; d < d1; d++) {                                                   \
                real g = gh[row + d];                                                             \
                if (o) {                                                                          \
                    go[row + d] = g * c[row + d];                                                 \
                    g *= o[row + d];                                                              \
                }                                                                                 \
                g += u[d];                                                                        \
                dz[row + d] = g - g * f[row + d];                                                 \
                df[row + d] = g * ((prev ? prev[d] : (real)0) - z[row + d]);                      \
                u[d] = g * f[row + d];                                                            \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
}

FORWARD(fo_pool_fwd_f32, float, fmaf, fabsf)
FORWARD(fo_pool_fwd_f64, double, fma, fabs)
BACKWARD(fo_pool_bwd_f32, float)
BACKWARD(fo_pool_bwd_f64, double)
