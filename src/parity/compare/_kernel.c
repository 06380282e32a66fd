/*
 * parity.compare._kernel -- fused single-pass accumulation of the per-stage metrics of one chunk.
 *
 * One call reads a chunk of the reference and of the candidate once and returns every partial the
 * Python driver (parity/compare/metrics.py) needs: NaN/Inf counts, the mismatch count, the worst
 * absolute / relative / out-of-tolerance element with its index, the four sums of squares and
 * products, and the greatest ULP distance.  The GIL is released while the loop runs.
 *
 * Every per-element formula is the same IEEE double formula as the NumPy reference implementation
 * (``_numpy_chunk`` in metrics.py), so both give identical counts, indices and maxima:
 *
 *     d     = |c - r|                          (0 for matching infinities, inf for Inf mismatches)
 *     rel   = d == 0 ? 0 : d / |r|
 *     bound = atol + rtol * |r|;   fail = d > bound;   excess = d - bound
 *
 * Build with -ffp-contract=off (no FMA contraction) and never with -ffast-math: NaN tests and exact
 * rounding are part of the contract.
 *
 * Layout.  A chunk is cut into blocks of BLOCK elements.  A block is first run through a vectorised
 * loop that keeps only running maxima, counts and sums: 128-bit GCC/Clang vector extensions (SSE2 on
 * x86-64, NEON on arm64) and, on x86-64 with GCC, an AVX2 version with intrinsics picked at load
 * time when the CPU has AVX2, FMA and POPCNT (no -march flag is needed).  If the block held a NaN or
 * an Inf (then sum (c - r)^2 is not finite) its results are dropped and the block is redone by the
 * scalar loop, which handles every case.  When a block's maximum beats the chunk's best so far, the
 * block is scanned again for the first element holding that maximum, so indices are the first in C
 * order, exactly as NumPy's argmax gives.  Sums go to four lanes (element i to lane i % 4) whichever
 * loop ran, added in element order within a block, then block by block; the AVX2 loop adds them with
 * fused multiply-adds, so its sums may differ from the other paths in the last bits (never the
 * counts, indices or maxima, which use separately rounded operations everywhere).
 *
 * Build flags: -DPARITY_KERNEL_SCALAR keeps only the scalar loop (for testing it).
 *
 * Python API:  chunk(ref, cand, rtype, ctype, rtol, atol, ulp_mode, ulp_m, ulp_emin) -> tuple
 *   ref, cand : C-contiguous buffers (any format; read as raw bytes) holding the same number of
 *               elements of type rtype / ctype: 0 = float64, 1 = float32, 2 = float16, 3 = bfloat16.
 *   ulp_mode  : 0 none, 1 ordered-bit distance (rtype == ctype), 2 |c - r| in units of the spacing
 *               of a float with ulp_m explicit mantissa bits and minimum normal exponent ulp_emin.
 *   returns (both_nan, mismatched, ref_nan, cand_nan, ref_inf, cand_inf, nan_mismatch,
 *            inf_mismatch, first_nan_index, abs_max, abs_index, rel_max, rel_index, excess_max,
 *            excess_index, sum_dd, sum_rr, sum_cc, sum_rc, ulp_max); indices are chunk-local and
 *            -1 when there is none; maxima are -1.0 when there is none.
 *   stages(...): the same for many small stages at once, one chunk each (see kernel_stages).
 *   rows(...): the same for stages of one size lying back to back in one buffer (see kernel_rows).
 *   simd() -> "avx2" | "sse2" | "vector" | "scalar": the code path in use.
 *   set_simd(enable) -> simd(): False forces the baseline vector code (tests compare the two).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__)
/* the 32-byte vector helpers are always inlined; no vector crosses a real call */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

/* -DPARITY_KERNEL_SCALAR builds the scalar code only (to test it on a compiler that has the rest) */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(PARITY_KERNEL_SCALAR)
#define AI static inline __attribute__((always_inline))
#define HAVE_VEC 1
#elif defined(__GNUC__) || defined(__clang__)
#define AI static inline __attribute__((always_inline))
#define HAVE_VEC 0
#else
#define AI static inline
#define HAVE_VEC 0
#endif

#if HAVE_VEC && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && (__GNUC__ >= 8)
#define HAVE_AVX2_CLONE 1
#else
#define HAVE_AVX2_CLONE 0
#endif

enum { T_F64 = 0, T_F32 = 1, T_F16 = 2, T_BF16 = 3 };
enum { ULP_NONE = 0, ULP_BITS = 1, ULP_SPACING = 2 };

#define BLOCK 2048 /* multiple of 8 */
#define LANES 4

typedef struct {
    double rtol, atol;
    int ulp_mode;
    int ulp_m, ulp_emin;
} Params;

typedef struct {
    int64_t both_nan, mismatched, ref_nan, cand_nan, ref_inf, cand_inf, nan_mm, inf_mm, first_nan;
    double abs_max, rel_max, exc_max;
    int64_t abs_idx, rel_idx, exc_idx;
    uint64_t ulp_u; /* ULP_BITS: greatest ordered-bit distance */
    int ulp_inf;    /* an Inf mismatch was seen (ULP distance is infinite) */
    double ulp_d;   /* ULP_SPACING: greatest distance in spacings */
    double dd[LANES], rr[LANES], cc[LANES], rc[LANES];
} Acc;

typedef struct {
    double dd[LANES], rr[LANES], cc[LANES], rc[LANES];
} Sums;

static void acc_init(Acc *a) {
    memset(a, 0, sizeof(*a));
    a->first_nan = -1;
    a->abs_max = a->rel_max = a->exc_max = -1.0;
    a->abs_idx = a->rel_idx = a->exc_idx = -1;
}

AI void sums_add(Acc *a, const Sums *s) {
    for (int k = 0; k < LANES; k++) {
        a->dd[k] += s->dd[k];
        a->rr[k] += s->rr[k];
        a->cc[k] += s->cc[k];
        a->rc[k] += s->rc[k];
    }
}

static double lanes_total(const double *x) { return (x[0] + x[1]) + (x[2] + x[3]); }

/* ------------------------------------------------------------------------------------------------ */
/* scalar element access                                                                             */

AI float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
AI uint32_t bits_from_f32(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
AI double f64_from_bits(uint64_t u) { double f; memcpy(&f, &u, 8); return f; }
AI uint64_t bits_from_f64(double f) { uint64_t u; memcpy(&u, &f, 8); return u; }

/* Exact float16 -> float32 (subnormals, Inf and NaN included). */
AI float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    float f;
    if (em >= 0x7c00u) {
        f = f32_from_bits((em << 13) | 0x7f800000u);
    } else {
        /* the half's exponent field lands in the float's; rescale by 2^(127-15). Exact, also for
           subnormals (no flush-to-zero in IEEE mode). */
        f = f32_from_bits(em << 13) * 0x1p112f;
    }
    return f32_from_bits(bits_from_f32(f) | sign);
}

AI double load1(const unsigned char *p, int64_t i, int t) {
    switch (t) {
    case T_F64: { double v; memcpy(&v, p + 8 * i, 8); return v; }
    case T_F32: { float v; memcpy(&v, p + 4 * i, 4); return (double)v; }
    case T_F16: { uint16_t h; memcpy(&h, p + 2 * i, 2); return (double)half_to_float(h); }
    default: { uint16_t h; memcpy(&h, p + 2 * i, 2); return (double)f32_from_bits((uint32_t)h << 16); }
    }
}

AI uint64_t loadbits1(const unsigned char *p, int64_t i, int t) {
    switch (t) {
    case T_F64: { uint64_t v; memcpy(&v, p + 8 * i, 8); return v; }
    case T_F32: { uint32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    default: { uint16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    }
}

AI int type_width(int t) { return t == T_F64 ? 64 : t == T_F32 ? 32 : 16; }

/* Distance in representable values between two sign-magnitude floats of width w:
   +0 and -0 are both at 0, so they are 0 apart. */
AI uint64_t ulp_dist(uint64_t a, uint64_t b, int w) {
    uint64_t sm = (uint64_t)1 << (w - 1);
    uint64_t ma = a & (sm - 1), mb = b & (sm - 1);
    if ((a & sm) == (b & sm)) return ma > mb ? ma - mb : mb - ma;
    return ma + mb;
}

/* 2^(m - e) where e = max(exponent of |r|, emin): the reciprocal of the spacing at |r|. */
AI double inv_spacing(double ar, int m, int emin) {
    int64_t e = (int64_t)((bits_from_f64(ar) >> 52) & 0x7ff) - 1023;
    if (e < emin) e = emin;
    return f64_from_bits((uint64_t)(m - e + 1023) << 52);
}

/* ------------------------------------------------------------------------------------------------ */
/* scalar path: every case                                                                           */

AI void slow_range(const unsigned char *rp, const unsigned char *cp, int64_t lo, int64_t hi, int rt, int ct,
                   int um, const Params *P, Acc *a, Sums *S) {
    const int w = type_width(rt);
    for (int64_t i = lo; i < hi; i++) {
        double r = load1(rp, i, rt), c = load1(cp, i, ct);
        int rn = r != r, cn = c != c;
        int ri = fabs(r) == INFINITY, ci = fabs(c) == INFINITY;
        a->ref_nan += rn;
        a->cand_nan += cn;
        a->ref_inf += ri;
        a->cand_inf += ci;
        if (rn | cn) {
            if (rn & cn) {
                a->both_nan++;
            } else {
                a->nan_mm++;
                a->mismatched++;
                if (a->first_nan < 0) a->first_nan = i;
            }
            continue;
        }
        double d, rel;
        if (ri | ci) {
            if (r == c) {
                d = 0.0;
                rel = 0.0;
            } else {
                a->inf_mm++;
                a->mismatched++;
                d = INFINITY;
                rel = INFINITY;
                if (INFINITY > a->exc_max) { a->exc_max = INFINITY; a->exc_idx = i; }
                a->ulp_inf = 1;
            }
            if (d > a->abs_max) { a->abs_max = d; a->abs_idx = i; }
            if (rel > a->rel_max) { a->rel_max = rel; a->rel_idx = i; }
            continue;
        }
        double ar = fabs(r);
        d = fabs(c - r);
        double bound = P->atol + P->rtol * ar;
        if (d > bound) {
            double e = d - bound;
            a->mismatched++;
            if (e > a->exc_max) { a->exc_max = e; a->exc_idx = i; }
        }
        rel = (d == 0.0) ? 0.0 : d / ar;
        if (d > a->abs_max) { a->abs_max = d; a->abs_idx = i; }
        if (rel > a->rel_max) { a->rel_max = rel; a->rel_idx = i; }
        int k = (int)(i & (LANES - 1));
        S->dd[k] += d * d;
        S->rr[k] += r * r;
        S->cc[k] += c * c;
        S->rc[k] += r * c;
        if (um == ULP_BITS) {
            uint64_t u = ulp_dist(loadbits1(rp, i, rt), loadbits1(cp, i, ct), w);
            if (u > a->ulp_u) a->ulp_u = u;
        } else if (um == ULP_SPACING) {
            double u = d * inv_spacing(ar, P->ulp_m, P->ulp_emin);
            if (u > a->ulp_d) a->ulp_d = u;
        }
    }
}

#if HAVE_VEC
/* ------------------------------------------------------------------------------------------------ */
/* vector path, baseline ISA: 128-bit GCC/Clang vector extensions (SSE2 on x86-64, NEON on arm64)     */

typedef double v2d __attribute__((vector_size(16)));
typedef int64_t v2l __attribute__((vector_size(16)));
typedef uint64_t v2ul __attribute__((vector_size(16)));
typedef float v2f __attribute__((vector_size(8)));
typedef uint32_t v2u __attribute__((vector_size(8)));
typedef uint16_t v2h __attribute__((vector_size(4)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));
typedef int16_t v8s __attribute__((vector_size(16)));
typedef uint16_t v8h __attribute__((vector_size(16)));

AI v2d vblend(v2l m, v2d a, v2d b) { return (v2d)(((v2l)a & m) | ((v2l)b & ~m)); }
AI v2d vabs(v2d x) { return (v2d)((v2l)x & (int64_t)0x7fffffffffffffffLL); }
/* a > b ? a : b per lane; b when either is NaN (the x86 MAXPD rule) */
AI v2d vmax(v2d a, v2d b) { return vblend(a > b, a, b); }
AI v4i smax32(v4i a, v4i b) { v4i m = a > b; return (a & m) | (b & ~m); }
AI v4i smin32(v4i a, v4i b) { v4i m = a < b; return (a & m) | (b & ~m); }
AI v4u umax32(v4u a, v4u b) { v4u m = (v4u)(a > b); return (a & m) | (b & ~m); }
AI v8s smax16(v8s a, v8s b) { v8s m = a > b; return (a & m) | (b & ~m); }
AI v8s smin16(v8s a, v8s b) { v8s m = a < b; return (a & m) | (b & ~m); }
AI v8h umax16(v8h a, v8h b) { v8h m = (v8h)(a > b); return (a & m) | (b & ~m); }

AI v2d load2(const unsigned char *p, int64_t i, int t) {
    switch (t) {
    case T_F64: { v2d v; memcpy(&v, p + 8 * i, 16); return v; }
    case T_F32: { v2f v; memcpy(&v, p + 4 * i, 8); return __builtin_convertvector(v, v2d); }
    case T_F16: {
        v2h h;
        memcpy(&h, p + 2 * i, 4);
        v2u u = __builtin_convertvector(h, v2u);
        v2u sign = (u & 0x8000u) << 16;
        v2u em = u & 0x7fffu;
        v2f f = (v2f)(em << 13) * 0x1p112f;
        v2u special = (v2u)(em >= 0x7c00u);
        v2u bits = ((v2u)f & ~special) | (((em << 13) | 0x7f800000u) & special);
        return __builtin_convertvector((v2f)(bits | sign), v2d);
    }
    default: {
        v2h h;
        memcpy(&h, p + 2 * i, 4);
        v2u u = __builtin_convertvector(h, v2u) << 16;
        return __builtin_convertvector((v2f)u, v2d);
    }
    }
}

/* Signed ordered keys: +-0 -> 0, positive values above, negative below, so |key_a - key_b| is the
   ULP distance (it fits the unsigned type of the same width). */
AI v4i key32(const unsigned char *p, int64_t i) {
    v4i u;
    memcpy(&u, p + 4 * i, 16);
    v4i s = u >> 31;
    return (u ^ (v4i)((v4u)s >> 1)) - s;
}

AI v8s key16(const unsigned char *p, int64_t i) {
    v8s u;
    memcpy(&u, p + 2 * i, 16);
    v8s s = u >> 15;
    return (u ^ (v8s)((v8h)s >> 1)) - s;
}

/* ULP distance of two float64 bit patterns (scalar: float64 stages are not the hot case here) */
AI uint64_t ulp_max64(const unsigned char *rp, const unsigned char *cp, int64_t i, int64_t k, uint64_t m) {
    for (int64_t j = i; j < i + k; j++) {
        uint64_t u = ulp_dist(loadbits1(rp, j, T_F64), loadbits1(cp, j, T_F64), 64);
        m = u > m ? u : m;
    }
    return m;
}

/* 2^(m - max(exponent(|r|), emin)): the exponent of max(|r|, 2^emin), subtracted from (m + 2046) in
   the exponent field. Same value as inv_spacing(). */
AI v2d vinv_spacing(v2d ar, v2d minnorm, v2l sbias) {
    v2d t = vmax(ar, minnorm);
    return (v2d)(sbias - ((v2l)t & (int64_t)0x7ff0000000000000LL));
}

typedef struct {
    v2d vatol, vrtol, minnorm;
    v2l sbias;
} VConst;

/* one pair of elements; S0/S1 select the lane pair (lanes 0-1 or 2-3) of the sums */
AI void fast_pair(v2d r, v2d c, const VConst *K, v2d *sdd, v2d *srr, v2d *scc, v2d *src, v2d *amx, v2d *rmx,
                  v2d *emx, v2l *nfail, int um, v2d *usp) {
    v2d ar = vabs(r);
    v2d d = vabs(c - r);
    v2d bound = K->vatol + K->vrtol * ar;
    *nfail -= d > bound; /* true is -1 */
    *emx = vmax(d - bound, *emx); /* > 0 exactly when some element fails */
    *amx = vmax(d, *amx);
    *rmx = vmax(d / ar, *rmx); /* 0/0 is NaN and leaves rmx as is (rel = 0 there; rmx >= 0) */
    *sdd += d * d;
    *srr += r * r;
    *scc += c * c;
    *src += r * c;
    if (um == ULP_SPACING) *usp = vmax(d * vinv_spacing(ar, K->minnorm, K->sbias), *usp);
}

/* First index in [lo, hi) whose value (0: abs, 1: rel, 2: excess of a failing element) == target. */
AI int64_t find_first(const unsigned char *rp, const unsigned char *cp, int64_t lo, int64_t hi, int rt, int ct,
                      const Params *P, int what, double target) {
    for (int64_t i = lo; i < hi; i++) {
        double r = load1(rp, i, rt), c = load1(cp, i, ct);
        double ar = fabs(r), d = fabs(c - r), v;
        if (what == 0) {
            v = d;
        } else if (what == 1) {
            v = d == 0.0 ? 0.0 : d / ar;
        } else {
            double bound = P->atol + P->rtol * ar;
            if (!(d > bound)) continue;
            v = d - bound;
        }
        if (v == target) return i;
    }
    return -1; /* not reached: target is one of the block's values */
}

/* Block results kept by the vector loops. */
typedef struct {
    double amx[4], rmx[4], emx[4], usp[4];
    int64_t nfail[4]; /* failing elements (count) */
    uint64_t ulp[8];
} Fast;

/* Fold a clean block's results (Fast F) into a; FIND locates the first element holding a maximum. */
#define FAST_FINISH(FIND)                                                                                \
    do {                                                                                                 \
        double m_;                                                                                       \
        for (int k = 0; k < 4; k++) a->mismatched += F.nfail[k];                                         \
        m_ = F.amx[0];                                                                                   \
        for (int k = 1; k < 4; k++) m_ = F.amx[k] > m_ ? F.amx[k] : m_;                                  \
        if (m_ > a->abs_max) { a->abs_max = m_; a->abs_idx = FIND(rp, cp, lo, lo + n, rt, ct, P, 0, m_); } \
        m_ = F.rmx[0];                                                                                   \
        for (int k = 1; k < 4; k++) m_ = F.rmx[k] > m_ ? F.rmx[k] : m_;                                  \
        if (m_ > a->rel_max) { a->rel_max = m_; a->rel_idx = FIND(rp, cp, lo, lo + n, rt, ct, P, 1, m_); } \
        m_ = F.emx[0];                                                                                   \
        for (int k = 1; k < 4; k++) m_ = F.emx[k] > m_ ? F.emx[k] : m_;                                  \
        if (m_ > 0.0 && m_ > a->exc_max) {                                                               \
            a->exc_max = m_;                                                                             \
            a->exc_idx = FIND(rp, cp, lo, lo + n, rt, ct, P, 2, m_);                                     \
        }                                                                                                \
        if (um == ULP_BITS) {                                                                            \
            for (int k = 0; k < 8; k++)                                                                  \
                if (F.ulp[k] > a->ulp_u) a->ulp_u = F.ulp[k];                                            \
        } else if (um == ULP_SPACING) {                                                                  \
            for (int k = 0; k < 4; k++)                                                                  \
                if (F.usp[k] > a->ulp_d) a->ulp_d = F.usp[k];                                            \
        }                                                                                                \
    } while (0)

/* Runs the block [lo, lo + n) (n a multiple of 8) into a and S. Returns 0, leaving a untouched, when
   the block holds a NaN or an Inf (or (c - r)^2 overflows); the scalar path must redo it then. */
AI int fast_range(const unsigned char *rp, const unsigned char *cp, int64_t lo, int64_t n, int rt, int ct, int um,
                  const Params *P, Acc *a, Sums *S) {
    const v2d zero = {0, 0};
    const int64_t sb = (int64_t)(P->ulp_m + 2046) << 52;
    const VConst K = {zero + P->atol, zero + P->rtol, zero + f64_from_bits((uint64_t)(P->ulp_emin + 1023) << 52),
                      {sb, sb}};
    /* lanes 0-1 (elements i % 4 in {0, 1}) and 2-3 */
    v2d sdd0 = zero, srr0 = zero, scc0 = zero, src0 = zero, sdd1 = zero, srr1 = zero, scc1 = zero, src1 = zero;
    v2d amx = zero, rmx = zero, emx = zero, usp = zero;
    v2l nfail = {0, 0};
    v4u u32 = {0, 0, 0, 0};
    v8h u16 = {0, 0, 0, 0, 0, 0, 0, 0};
    uint64_t u64 = 0;
    const int w = type_width(rt);
    for (int64_t i = lo; i < lo + n; i += 8) {
        for (int g = 0; g < 8; g += 4) {
            fast_pair(load2(rp, i + g, rt), load2(cp, i + g, ct), &K, &sdd0, &srr0, &scc0, &src0, &amx, &rmx, &emx,
                      &nfail, um, &usp);
            fast_pair(load2(rp, i + g + 2, rt), load2(cp, i + g + 2, ct), &K, &sdd1, &srr1, &scc1, &src1, &amx, &rmx,
                      &emx, &nfail, um, &usp);
        }
        if (um == ULP_BITS) {
            if (w == 32) {
                for (int g = 0; g < 8; g += 4) {
                    v4i kr = key32(rp, i + g), kc = key32(cp, i + g);
                    u32 = umax32(u32, (v4u)(smax32(kr, kc) - smin32(kr, kc)));
                }
            } else if (w == 16) {
                v8s kr = key16(rp, i), kc = key16(cp, i);
                u16 = umax16(u16, (v8h)(smax16(kr, kc) - smin16(kr, kc)));
            } else {
                u64 = ulp_max64(rp, cp, i, 8, u64);
            }
        }
    }
    double check = (sdd0[0] + sdd0[1]) + (sdd1[0] + sdd1[1]);
    if (!(check <= DBL_MAX)) return 0;
    Fast F;
    for (int k = 0; k < 2; k++) {
        S->dd[k] = sdd0[k];
        S->dd[k + 2] = sdd1[k];
        S->rr[k] = srr0[k];
        S->rr[k + 2] = srr1[k];
        S->cc[k] = scc0[k];
        S->cc[k + 2] = scc1[k];
        S->rc[k] = src0[k];
        S->rc[k + 2] = src1[k];
        F.amx[k] = F.amx[k + 2] = amx[k];
        F.rmx[k] = F.rmx[k + 2] = rmx[k];
        F.emx[k] = F.emx[k + 2] = emx[k];
        F.usp[k] = F.usp[k + 2] = usp[k];
        F.nfail[k] = nfail[k];
        F.nfail[k + 2] = 0;
    }
    for (int k = 0; k < 8; k++)
        F.ulp[k] = w == 32 ? (k < 4 ? (uint64_t)u32[k] : 0) : w == 16 ? (uint64_t)u16[k] : (k == 0 ? u64 : 0);
    FAST_FINISH(find_first);
    return 1;
}
#endif /* HAVE_VEC */

#if HAVE_AVX2_CLONE
/* ------------------------------------------------------------------------------------------------ */
/* vector path, AVX2 (picked at load time)                                                           */

#include <immintrin.h>

#define XAI static inline __attribute__((always_inline, target("avx2,fma,popcnt")))

XAI __m256d x_load4(const unsigned char *p, int64_t i, int t) {
    switch (t) {
    case T_F64: return _mm256_loadu_pd((const double *)(p + 8 * i));
    case T_F32: return _mm256_cvtps_pd(_mm_loadu_ps((const float *)(p + 4 * i)));
    case T_F16: {
        __m128i u = _mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)(p + 2 * i)));
        __m128i sign = _mm_slli_epi32(_mm_and_si128(u, _mm_set1_epi32(0x8000)), 16);
        __m128i em = _mm_and_si128(u, _mm_set1_epi32(0x7fff));
        __m128i sh = _mm_slli_epi32(em, 13);
        __m128 f = _mm_mul_ps(_mm_castsi128_ps(sh), _mm_set1_ps(0x1p112f));
        __m128i special = _mm_cmpgt_epi32(em, _mm_set1_epi32(0x7bff));
        __m128i bits = _mm_blendv_epi8(_mm_castps_si128(f), _mm_or_si128(sh, _mm_set1_epi32(0x7f800000)), special);
        return _mm256_cvtps_pd(_mm_castsi128_ps(_mm_or_si128(bits, sign)));
    }
    default: {
        __m128i u = _mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)(p + 2 * i)));
        return _mm256_cvtps_pd(_mm_castsi128_ps(_mm_slli_epi32(u, 16)));
    }
    }
}

XAI __m256i x_key32(const unsigned char *p, int64_t i) {
    /* negative: ~mag + 1 = -mag; positive: mag */
    __m256i u = _mm256_loadu_si256((const __m256i *)(p + 4 * i));
    __m256i s = _mm256_srai_epi32(u, 31);
    return _mm256_sub_epi32(_mm256_xor_si256(u, _mm256_srli_epi32(s, 1)), s);
}

XAI __m128i x_key16(const unsigned char *p, int64_t i) {
    __m128i u = _mm_loadu_si128((const __m128i *)(p + 2 * i));
    __m128i s = _mm_srai_epi16(u, 15);
    return _mm_sub_epi16(_mm_xor_si128(u, _mm_srli_epi16(s, 1)), s);
}

XAI __m256i x_key64(const unsigned char *p, int64_t i) {
    __m256i u = _mm256_loadu_si256((const __m256i *)(p + 8 * i));
    __m256i s = _mm256_cmpgt_epi64(_mm256_setzero_si256(), u);
    __m256i mag = _mm256_srli_epi64(_mm256_slli_epi64(u, 1), 1);
    return _mm256_sub_epi64(_mm256_xor_si256(mag, s), s);
}

/* running max of unsigned 64-bit distances, kept XOR 2^63 so that a signed compare orders them */
XAI __m256i x_umax64b(__m256i accb, __m256i kr, __m256i kc) {
    __m256i dist = _mm256_blendv_epi8(_mm256_sub_epi64(kr, kc), _mm256_sub_epi64(kc, kr), _mm256_cmpgt_epi64(kc, kr));
    __m256i db = _mm256_xor_si256(dist, _mm256_set1_epi64x(INT64_MIN));
    return _mm256_blendv_epi8(accb, db, _mm256_cmpgt_epi64(db, accb));
}

/* First index in [lo, hi) (hi - lo a multiple of 4) whose value == target; see find_first(). */
XAI int64_t x_find_first(const unsigned char *rp, const unsigned char *cp, int64_t lo, int64_t hi, int rt, int ct,
                         const Params *P, int what, double target) {
    const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
    const __m256d vatol = _mm256_set1_pd(P->atol), vrtol = _mm256_set1_pd(P->rtol);
    const __m256d vt = _mm256_set1_pd(target), zero = _mm256_setzero_pd();
    for (int64_t i = lo; i < hi; i += 4) {
        __m256d r = x_load4(rp, i, rt), c = x_load4(cp, i, ct);
        __m256d ar = _mm256_and_pd(r, absmask);
        __m256d d = _mm256_and_pd(_mm256_sub_pd(c, r), absmask);
        __m256d eq;
        if (what == 0) {
            eq = _mm256_cmp_pd(d, vt, _CMP_EQ_OQ);
        } else if (what == 1) {
            __m256d rel = _mm256_blendv_pd(_mm256_div_pd(d, ar), zero, _mm256_cmp_pd(d, zero, _CMP_EQ_OQ));
            eq = _mm256_cmp_pd(rel, vt, _CMP_EQ_OQ);
        } else {
            __m256d bound = _mm256_add_pd(vatol, _mm256_mul_pd(vrtol, ar));
            eq = _mm256_and_pd(_mm256_cmp_pd(d, bound, _CMP_GT_OQ),
                               _mm256_cmp_pd(_mm256_sub_pd(d, bound), vt, _CMP_EQ_OQ));
        }
        int mask = _mm256_movemask_pd(eq);
        if (mask) return i + __builtin_ctz((unsigned)mask);
    }
    return -1; /* not reached */
}

/* The sums use fused multiply-adds here (they only need to agree with the other paths to rounding);
   every compared or maximised quantity is computed with separately rounded operations as elsewhere.
   The excess max is taken over all elements: it is > 0 exactly when some element fails. */
#define X_GROUP(R, C)                                                                                    \
    do {                                                                                                 \
        __m256d ar = _mm256_and_pd(R, absmask);                                                          \
        __m256d d = _mm256_and_pd(_mm256_sub_pd(C, R), absmask);                                         \
        __m256d bound = _mm256_add_pd(vatol, _mm256_mul_pd(vrtol, ar));                                  \
        nfail += __builtin_popcount((unsigned)_mm256_movemask_pd(_mm256_cmp_pd(d, bound, _CMP_GT_OQ)));  \
        emx = _mm256_max_pd(_mm256_sub_pd(d, bound), emx);                                               \
        amx = _mm256_max_pd(d, amx);                                                                     \
        rmx = _mm256_max_pd(_mm256_div_pd(d, ar), rmx); /* NaN (0/0) keeps rmx */                       \
        sdd = _mm256_fmadd_pd(d, d, sdd);                                                                \
        srr = _mm256_fmadd_pd(R, R, srr);                                                                \
        scc = _mm256_fmadd_pd(C, C, scc);                                                                \
        src = _mm256_fmadd_pd(R, C, src);                                                                \
        if (um == ULP_SPACING) {                                                                         \
            __m256d t = _mm256_max_pd(ar, minnorm);                                                      \
            __m256d sc = _mm256_castsi256_pd(                                                            \
                _mm256_sub_epi64(sbias, _mm256_and_si256(_mm256_castpd_si256(t), expmask)));             \
            usp = _mm256_max_pd(_mm256_mul_pd(d, sc), usp);                                              \
        }                                                                                                \
    } while (0)

XAI int x_fast_range(const unsigned char *rp, const unsigned char *cp, int64_t lo, int64_t n, int rt, int ct,
                     int um, const Params *P, Acc *a, Sums *S) {
    const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
    const __m256d vatol = _mm256_set1_pd(P->atol), vrtol = _mm256_set1_pd(P->rtol);
    const __m256d minnorm = _mm256_set1_pd(f64_from_bits((uint64_t)(P->ulp_emin + 1023) << 52));
    const __m256i expmask = _mm256_set1_epi64x(0x7ff0000000000000LL);
    const __m256i sbias = _mm256_set1_epi64x((int64_t)(P->ulp_m + 2046) << 52);
    __m256d sdd = _mm256_setzero_pd(), srr = sdd, scc = sdd, src = sdd;
    __m256d amx = sdd, rmx = sdd, emx = sdd, usp = sdd;
    __m256i u32 = _mm256_setzero_si256(), u64b = _mm256_set1_epi64x(INT64_MIN);
    int64_t nfail = 0;
    __m128i u16 = _mm_setzero_si128();
    const int w = type_width(rt);
    for (int64_t i = lo; i < lo + n; i += 8) {
        __m256d r0 = x_load4(rp, i, rt), c0 = x_load4(cp, i, ct);
        X_GROUP(r0, c0);
        __m256d r1 = x_load4(rp, i + 4, rt), c1 = x_load4(cp, i + 4, ct);
        X_GROUP(r1, c1);
        if (um == ULP_BITS) {
            if (w == 32) {
                __m256i kr = x_key32(rp, i), kc = x_key32(cp, i);
                u32 = _mm256_max_epu32(u32, _mm256_sub_epi32(_mm256_max_epi32(kr, kc), _mm256_min_epi32(kr, kc)));
            } else if (w == 16) {
                __m128i kr = x_key16(rp, i), kc = x_key16(cp, i);
                u16 = _mm_max_epu16(u16, _mm_sub_epi16(_mm_max_epi16(kr, kc), _mm_min_epi16(kr, kc)));
            } else {
                u64b = x_umax64b(u64b, x_key64(rp, i), x_key64(cp, i));
                u64b = x_umax64b(u64b, x_key64(rp, i + 4), x_key64(cp, i + 4));
            }
        }
    }
    double t4[4];
    _mm256_storeu_pd(t4, sdd);
    double check = (t4[0] + t4[1]) + (t4[2] + t4[3]);
    if (!(check <= DBL_MAX)) return 0;
    Fast F;
    _mm256_storeu_pd(S->dd, sdd);
    _mm256_storeu_pd(S->rr, srr);
    _mm256_storeu_pd(S->cc, scc);
    _mm256_storeu_pd(S->rc, src);
    _mm256_storeu_pd(F.amx, amx);
    _mm256_storeu_pd(F.rmx, rmx);
    _mm256_storeu_pd(F.emx, emx);
    _mm256_storeu_pd(F.usp, usp);
    F.nfail[0] = nfail;
    F.nfail[1] = F.nfail[2] = F.nfail[3] = 0;
    if (w == 32) {
        uint32_t t[8];
        _mm256_storeu_si256((__m256i *)t, u32);
        for (int k = 0; k < 8; k++) F.ulp[k] = t[k];
    } else if (w == 16) {
        uint16_t t[8];
        _mm_storeu_si128((__m128i *)t, u16);
        for (int k = 0; k < 8; k++) F.ulp[k] = t[k];
    } else {
        uint64_t t[4];
        _mm256_storeu_si256((__m256i *)t, u64b);
        for (int k = 0; k < 4; k++) F.ulp[k] = t[k] ^ ((uint64_t)1 << 63);
        for (int k = 4; k < 8; k++) F.ulp[k] = 0;
    }
    FAST_FINISH(x_find_first);
    return 1;
}
#endif /* HAVE_AVX2_CLONE */

/* ------------------------------------------------------------------------------------------------ */
/* one chunk                                                                                         */

#define CHUNK_BODY(FAST)                                                                                 \
    acc_init(a);                                                                                         \
    for (int64_t lo = 0; lo < n; lo += BLOCK) {                                                          \
        int64_t nb = n - lo < BLOCK ? n - lo : BLOCK;                                                    \
        int64_t nv = nb & ~(int64_t)7, done = 0;                                                         \
        Sums S;                                                                                          \
        if (nv > 0 && FAST(rp, cp, lo, nv, rt, ct, um, P, a, &S)) done = nv;                             \
        if (done == 0) memset(&S, 0, sizeof(S));                                                         \
        slow_range(rp, cp, lo + done, lo + nb, rt, ct, um, P, a, &S);                                    \
        sums_add(a, &S);                                                                                 \
    }

#if HAVE_VEC
#define BASE_FAST fast_range
#else
AI int no_fast(const unsigned char *rp, const unsigned char *cp, int64_t lo, int64_t n, int rt, int ct, int um,
               const Params *P, Acc *a, Sums *S) {
    return 0;
}
#define BASE_FAST no_fast
#endif

AI void chunk_impl(const unsigned char *rp, const unsigned char *cp, int64_t n, int rt, int ct, int um,
                   const Params *P, Acc *a) {
    CHUNK_BODY(BASE_FAST)
}

#if HAVE_AVX2_CLONE
XAI void x_chunk_impl(const unsigned char *rp, const unsigned char *cp, int64_t n, int rt, int ct, int um,
                      const Params *P, Acc *a) {
    CHUNK_BODY(x_fast_range)
}
#endif

typedef void (*chunk_fn)(const unsigned char *, const unsigned char *, int64_t, const Params *, Acc *);

#if HAVE_AVX2_CLONE
#define DEFINE_CHUNK(NAME, RT, CT, UM)                                                                   \
    static void NAME##_base(const unsigned char *rp, const unsigned char *cp, int64_t n, const Params *P, \
                            Acc *a) {                                                                    \
        chunk_impl(rp, cp, n, RT, CT, UM, P, a);                                                         \
    }                                                                                                    \
    __attribute__((target("avx2,fma,popcnt"))) static void NAME##_avx2(const unsigned char *rp, const unsigned char *cp, \
                                                            int64_t n, const Params *P, Acc *a) {        \
        x_chunk_impl(rp, cp, n, RT, CT, UM, P, a);                                                       \
    }
#define CHUNK_ENTRY(NAME) {NAME##_base, NAME##_avx2}
#else
#define DEFINE_CHUNK(NAME, RT, CT, UM)                                                                   \
    static void NAME##_base(const unsigned char *rp, const unsigned char *cp, int64_t n, const Params *P, \
                            Acc *a) {                                                                    \
        chunk_impl(rp, cp, n, RT, CT, UM, P, a);                                                         \
    }
#define CHUNK_ENTRY(NAME) {NAME##_base, NAME##_base}
#endif

/* same dtype: bit distance (float64 also without ULP or with spacing, for widened generic chunks);
   different dtypes: spacing of the coarser dtype */
DEFINE_CHUNK(f64_f64_bits, T_F64, T_F64, ULP_BITS)
DEFINE_CHUNK(f64_f64_none, T_F64, T_F64, ULP_NONE)
DEFINE_CHUNK(f64_f64_spc, T_F64, T_F64, ULP_SPACING)
DEFINE_CHUNK(f32_f32_bits, T_F32, T_F32, ULP_BITS)
DEFINE_CHUNK(f16_f16_bits, T_F16, T_F16, ULP_BITS)
DEFINE_CHUNK(bf16_bf16_bits, T_BF16, T_BF16, ULP_BITS)
DEFINE_CHUNK(f64_f32_spc, T_F64, T_F32, ULP_SPACING)
DEFINE_CHUNK(f64_f16_spc, T_F64, T_F16, ULP_SPACING)
DEFINE_CHUNK(f64_bf16_spc, T_F64, T_BF16, ULP_SPACING)
DEFINE_CHUNK(f32_f64_spc, T_F32, T_F64, ULP_SPACING)
DEFINE_CHUNK(f32_f16_spc, T_F32, T_F16, ULP_SPACING)
DEFINE_CHUNK(f32_bf16_spc, T_F32, T_BF16, ULP_SPACING)
DEFINE_CHUNK(f16_f64_spc, T_F16, T_F64, ULP_SPACING)
DEFINE_CHUNK(f16_f32_spc, T_F16, T_F32, ULP_SPACING)
DEFINE_CHUNK(f16_bf16_spc, T_F16, T_BF16, ULP_SPACING)
DEFINE_CHUNK(bf16_f64_spc, T_BF16, T_F64, ULP_SPACING)
DEFINE_CHUNK(bf16_f32_spc, T_BF16, T_F32, ULP_SPACING)
DEFINE_CHUNK(bf16_f16_spc, T_BF16, T_F16, ULP_SPACING)

typedef struct {
    int rt, ct, um;
    chunk_fn fn[2]; /* baseline, AVX2 */
} ChunkEntry;

static const ChunkEntry CHUNKS[] = {
    {T_F64, T_F64, ULP_BITS, CHUNK_ENTRY(f64_f64_bits)},
    {T_F64, T_F64, ULP_NONE, CHUNK_ENTRY(f64_f64_none)},
    {T_F64, T_F64, ULP_SPACING, CHUNK_ENTRY(f64_f64_spc)},
    {T_F32, T_F32, ULP_BITS, CHUNK_ENTRY(f32_f32_bits)},
    {T_F16, T_F16, ULP_BITS, CHUNK_ENTRY(f16_f16_bits)},
    {T_BF16, T_BF16, ULP_BITS, CHUNK_ENTRY(bf16_bf16_bits)},
    {T_F64, T_F32, ULP_SPACING, CHUNK_ENTRY(f64_f32_spc)},
    {T_F64, T_F16, ULP_SPACING, CHUNK_ENTRY(f64_f16_spc)},
    {T_F64, T_BF16, ULP_SPACING, CHUNK_ENTRY(f64_bf16_spc)},
    {T_F32, T_F64, ULP_SPACING, CHUNK_ENTRY(f32_f64_spc)},
    {T_F32, T_F16, ULP_SPACING, CHUNK_ENTRY(f32_f16_spc)},
    {T_F32, T_BF16, ULP_SPACING, CHUNK_ENTRY(f32_bf16_spc)},
    {T_F16, T_F64, ULP_SPACING, CHUNK_ENTRY(f16_f64_spc)},
    {T_F16, T_F32, ULP_SPACING, CHUNK_ENTRY(f16_f32_spc)},
    {T_F16, T_BF16, ULP_SPACING, CHUNK_ENTRY(f16_bf16_spc)},
    {T_BF16, T_F64, ULP_SPACING, CHUNK_ENTRY(bf16_f64_spc)},
    {T_BF16, T_F32, ULP_SPACING, CHUNK_ENTRY(bf16_f32_spc)},
    {T_BF16, T_F16, ULP_SPACING, CHUNK_ENTRY(bf16_f16_spc)},
};

static int use_avx2 = 0;

static const Py_ssize_t ITEMSIZE[4] = {8, 4, 2, 2};

/* ------------------------------------------------------------------------------------------------ */
/* Python binding                                                                                    */

static PyObject *kernel_chunk(PyObject *self, PyObject *args) {
    PyObject *ro, *co;
    int rt, ct, ulp_mode, ulp_m, ulp_emin;
    double rtol, atol;
    if (!PyArg_ParseTuple(args, "OOiiddiii:chunk", &ro, &co, &rt, &ct, &rtol, &atol, &ulp_mode, &ulp_m, &ulp_emin))
        return NULL;
    chunk_fn fn = NULL;
    for (size_t k = 0; k < sizeof(CHUNKS) / sizeof(CHUNKS[0]); k++) {
        if (CHUNKS[k].rt == rt && CHUNKS[k].ct == ct && CHUNKS[k].um == ulp_mode) {
            fn = CHUNKS[k].fn[use_avx2];
            break;
        }
    }
    if (fn == NULL) {
        PyErr_Format(PyExc_ValueError,
                     "no kernel for types (%d, %d) with ulp_mode %d (types: 0 f64, 1 f32, 2 f16, 3 bf16; "
                     "equal types take ulp_mode 1, different types 2, f64/f64 any)",
                     rt, ct, ulp_mode);
        return NULL;
    }
    if (ulp_mode == ULP_SPACING && (ulp_m < 0 || ulp_m > 52 || ulp_emin < -1022 || ulp_emin > 0)) {
        PyErr_SetString(PyExc_ValueError, "bad ulp_m / ulp_emin");
        return NULL;
    }
    Py_buffer rb, cb;
    if (PyObject_GetBuffer(ro, &rb, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(co, &cb, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&rb);
        return NULL;
    }
    PyObject *res = NULL;
    if (rb.len % ITEMSIZE[rt] || cb.len % ITEMSIZE[ct] || rb.len / ITEMSIZE[rt] != cb.len / ITEMSIZE[ct]) {
        PyErr_SetString(PyExc_ValueError, "ref and cand buffers hold different numbers of elements");
        goto done;
    }
    {
        int64_t n = (int64_t)(rb.len / ITEMSIZE[rt]);
        Params P = {rtol, atol, ulp_mode, ulp_m, ulp_emin};
        Acc a;
        Py_BEGIN_ALLOW_THREADS
        fn((const unsigned char *)rb.buf, (const unsigned char *)cb.buf, n, &P, &a);
        Py_END_ALLOW_THREADS
        double ulp = 0.0;
        if (a.ulp_inf) ulp = INFINITY;
        else if (ulp_mode == ULP_BITS) ulp = (double)a.ulp_u;
        else if (ulp_mode == ULP_SPACING) ulp = a.ulp_d;
        res = Py_BuildValue("(LLLLLLLLLdLdLdLddddd)", (long long)a.both_nan, (long long)a.mismatched,
                            (long long)a.ref_nan, (long long)a.cand_nan, (long long)a.ref_inf, (long long)a.cand_inf,
                            (long long)a.nan_mm, (long long)a.inf_mm, (long long)a.first_nan, a.abs_max,
                            (long long)a.abs_idx, a.rel_max, (long long)a.rel_idx, a.exc_max, (long long)a.exc_idx,
                            lanes_total(a.dd), lanes_total(a.rr), lanes_total(a.cc), lanes_total(a.rc), ulp);
    }
done:
    PyBuffer_Release(&rb);
    PyBuffer_Release(&cb);
    return res;
}

/* stages(refs, cands, rtype, ctype, rtol, atol, ulp_mode, ulp_m, ulp_emin, ints, floats) -> None
 * Many small stages in one call: stage k is refs[k] against cands[k] (each a C-contiguous buffer of
 * one stage), run through the very chunk function chunk() uses, as one chunk. Row k of ints (int64,
 * STAGE_INTS a row) gets both_nan, mismatched, ref_nan, cand_nan, ref_inf, cand_inf, nan_mismatch,
 * inf_mismatch, first_nan, abs_index, rel_index, excess_index, elements, ok; row k of floats
 * (float64, STAGE_FLOATS a row) abs_max, rel_max, excess_max, sum_dd, sum_rr, sum_cc, sum_rc,
 * ulp_max, and the reference and candidate values (widened exactly) at abs_index and rel_index
 * (0.0 where there is none). ok is 0 when a buffer cannot be read or the two sizes differ; that row
 * holds nothing else. */
#define STAGE_INTS 14
#define STAGE_FLOATS 12

/* one stage of n elements at rp / cp into row I / F (see stages() above) */
static void stage_values(const unsigned char *rp, const unsigned char *cp, int64_t n, int rt, int ct, chunk_fn fn,
                         const Params *P, int64_t *I, double *F) {
    Acc a;
    fn(rp, cp, n, P, &a);
    int64_t row[STAGE_INTS] = {a.both_nan, a.mismatched, a.ref_nan, a.cand_nan, a.ref_inf, a.cand_inf, a.nan_mm,
                               a.inf_mm, a.first_nan, a.abs_idx, a.rel_idx, a.exc_idx, n, 1};
    memcpy(I, row, sizeof(row));
    double ulp = 0.0;
    if (a.ulp_inf) ulp = INFINITY;
    else if (P->ulp_mode == ULP_BITS) ulp = (double)a.ulp_u;
    else if (P->ulp_mode == ULP_SPACING) ulp = a.ulp_d;
    F[0] = a.abs_max;
    F[1] = a.rel_max;
    F[2] = a.exc_max;
    F[3] = lanes_total(a.dd);
    F[4] = lanes_total(a.rr);
    F[5] = lanes_total(a.cc);
    F[6] = lanes_total(a.rc);
    F[7] = ulp;
    if (a.abs_idx >= 0) { F[8] = load1(rp, a.abs_idx, rt); F[9] = load1(cp, a.abs_idx, ct); }
    if (a.rel_idx >= 0) { F[10] = load1(rp, a.rel_idx, rt); F[11] = load1(cp, a.rel_idx, ct); }
}

static int stage_row(PyObject *ro, PyObject *co, int rt, int ct, chunk_fn fn, const Params *P, int64_t *I,
                     double *F) {
    Py_buffer rb, cb;
    memset(I, 0, STAGE_INTS * sizeof(int64_t));
    memset(F, 0, STAGE_FLOATS * sizeof(double));
    if (PyObject_GetBuffer(ro, &rb, PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        return 0;
    }
    if (PyObject_GetBuffer(co, &cb, PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        PyBuffer_Release(&rb);
        return 0;
    }
    int ok = !(rb.len % ITEMSIZE[rt] || cb.len % ITEMSIZE[ct] || rb.len / ITEMSIZE[rt] != cb.len / ITEMSIZE[ct]);
    if (ok)
        stage_values((const unsigned char *)rb.buf, (const unsigned char *)cb.buf, (int64_t)(rb.len / ITEMSIZE[rt]),
                     rt, ct, fn, P, I, F);
    PyBuffer_Release(&rb);
    PyBuffer_Release(&cb);
    return ok;
}

static chunk_fn find_chunk_fn(int rt, int ct, int ulp_mode, int ulp_m, int ulp_emin) {
    for (size_t k = 0; k < sizeof(CHUNKS) / sizeof(CHUNKS[0]); k++) {
        if (CHUNKS[k].rt == rt && CHUNKS[k].ct == ct && CHUNKS[k].um == ulp_mode) {
            if (ulp_mode == ULP_SPACING && (ulp_m < 0 || ulp_m > 52 || ulp_emin < -1022 || ulp_emin > 0)) break;
            return CHUNKS[k].fn[use_avx2];
        }
    }
    PyErr_Format(PyExc_ValueError, "no kernel for types (%d, %d) with ulp_mode %d (or bad ulp_m / ulp_emin)", rt, ct,
                 ulp_mode);
    return NULL;
}

static PyObject *kernel_stages(PyObject *self, PyObject *args) {
    PyObject *refs, *cands, *io, *fo;
    int rt, ct, ulp_mode, ulp_m, ulp_emin;
    double rtol, atol;
    if (!PyArg_ParseTuple(args, "OOiiddiiiOO:stages", &refs, &cands, &rt, &ct, &rtol, &atol, &ulp_mode, &ulp_m,
                          &ulp_emin, &io, &fo))
        return NULL;
    chunk_fn fn = find_chunk_fn(rt, ct, ulp_mode, ulp_m, ulp_emin);
    if (fn == NULL) return NULL;
    PyObject *rs = PySequence_Fast(refs, "refs must be a sequence"), *cs = NULL;
    if (rs == NULL) return NULL;
    cs = PySequence_Fast(cands, "cands must be a sequence");
    if (cs == NULL) { Py_DECREF(rs); return NULL; }
    Py_buffer ib, fb;
    int have_i = 0, have_f = 0;
    PyObject *res = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(rs);
    if (PySequence_Fast_GET_SIZE(cs) != n) {
        PyErr_SetString(PyExc_ValueError, "refs and cands hold different numbers of stages");
        goto done;
    }
    if (PyObject_GetBuffer(io, &ib, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) goto done;
    have_i = 1;
    if (PyObject_GetBuffer(fo, &fb, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) goto done;
    have_f = 1;
    if (ib.len < (Py_ssize_t)(n * STAGE_INTS * sizeof(int64_t)) || fb.len < (Py_ssize_t)(n * STAGE_FLOATS * sizeof(double))) {
        PyErr_SetString(PyExc_ValueError, "the output buffers are too small for this many stages");
        goto done;
    }
    {
        Params P = {rtol, atol, ulp_mode, ulp_m, ulp_emin};
        int64_t *I = (int64_t *)ib.buf;
        double *F = (double *)fb.buf;
        PyObject **ritems = PySequence_Fast_ITEMS(rs), **citems = PySequence_Fast_ITEMS(cs);
        for (Py_ssize_t k = 0; k < n; k++)
            stage_row(ritems[k], citems[k], rt, ct, fn, &P, I + k * STAGE_INTS, F + k * STAGE_FLOATS);
    }
    Py_INCREF(Py_None);
    res = Py_None;
done:
    if (have_i) PyBuffer_Release(&ib);
    if (have_f) PyBuffer_Release(&fb);
    Py_DECREF(rs);
    Py_DECREF(cs);
    return res;
}

/* rows(ref, cand, count, rtype, ctype, rtol, atol, ulp_mode, ulp_m, ulp_emin, ints, floats) -> None
 * Like stages(), for count stages of one size lying back to back: ref and cand are C-contiguous
 * buffers of count equal parts (stage k is part k of each), e.g. the bytes of a run of stages in a
 * data file, read in place. Every row is read (ok = 1). */
static PyObject *kernel_rows(PyObject *self, PyObject *args) {
    PyObject *ro, *co, *io, *fo;
    Py_ssize_t count;
    int rt, ct, ulp_mode, ulp_m, ulp_emin;
    double rtol, atol;
    if (!PyArg_ParseTuple(args, "OOniiddiiiOO:rows", &ro, &co, &count, &rt, &ct, &rtol, &atol, &ulp_mode, &ulp_m,
                          &ulp_emin, &io, &fo))
        return NULL;
    chunk_fn fn = find_chunk_fn(rt, ct, ulp_mode, ulp_m, ulp_emin);
    if (fn == NULL) return NULL;
    Py_buffer rb, cb, ib, fb;
    int have = 0;
    PyObject *res = NULL;
    if (PyObject_GetBuffer(ro, &rb, PyBUF_C_CONTIGUOUS) < 0) goto done;
    have = 1;
    if (PyObject_GetBuffer(co, &cb, PyBUF_C_CONTIGUOUS) < 0) goto done;
    have = 2;
    if (PyObject_GetBuffer(io, &ib, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) goto done;
    have = 3;
    if (PyObject_GetBuffer(fo, &fb, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) goto done;
    have = 4;
    if (count < 0 || (count == 0 && (rb.len || cb.len))) {
        PyErr_SetString(PyExc_ValueError, "count must be positive (or 0 with empty buffers)");
        goto done;
    }
    if (count > 0 && (rb.len % (count * ITEMSIZE[rt]) || cb.len % (count * ITEMSIZE[ct]) ||
                      rb.len / (count * ITEMSIZE[rt]) != cb.len / (count * ITEMSIZE[ct]))) {
        PyErr_SetString(PyExc_ValueError, "ref and cand do not hold count stages of one size each");
        goto done;
    }
    if (ib.len < (Py_ssize_t)(count * STAGE_INTS * sizeof(int64_t)) ||
        fb.len < (Py_ssize_t)(count * STAGE_FLOATS * sizeof(double))) {
        PyErr_SetString(PyExc_ValueError, "the output buffers are too small for this many stages");
        goto done;
    }
    {
        Params P = {rtol, atol, ulp_mode, ulp_m, ulp_emin};
        int64_t *I = (int64_t *)ib.buf;
        double *F = (double *)fb.buf;
        int64_t n = count ? (int64_t)(rb.len / (count * ITEMSIZE[rt])) : 0;
        const unsigned char *rp = (const unsigned char *)rb.buf, *cp = (const unsigned char *)cb.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t k = 0; k < count; k++) {
            memset(I + k * STAGE_INTS, 0, STAGE_INTS * sizeof(int64_t));
            memset(F + k * STAGE_FLOATS, 0, STAGE_FLOATS * sizeof(double));
            stage_values(rp + k * n * ITEMSIZE[rt], cp + k * n * ITEMSIZE[ct], n, rt, ct, fn, &P, I + k * STAGE_INTS,
                         F + k * STAGE_FLOATS);
        }
        Py_END_ALLOW_THREADS
    }
    Py_INCREF(Py_None);
    res = Py_None;
done:
    if (have >= 4) PyBuffer_Release(&fb);
    if (have >= 3) PyBuffer_Release(&ib);
    if (have >= 2) PyBuffer_Release(&cb);
    if (have >= 1) PyBuffer_Release(&rb);
    return res;
}

static PyObject *kernel_simd(PyObject *self, PyObject *noargs) {
#if HAVE_AVX2_CLONE
    return PyUnicode_FromString(use_avx2 ? "avx2" : "sse2");
#elif HAVE_VEC
    return PyUnicode_FromString("vector");
#else
    return PyUnicode_FromString("scalar");
#endif
}

static PyObject *kernel_set_simd(PyObject *self, PyObject *arg) {
    /* testing hook: set_simd(False) forces the baseline code on an AVX2 machine */
    int want = PyObject_IsTrue(arg);
    if (want < 0) return NULL;
#if HAVE_AVX2_CLONE
    __builtin_cpu_init();
    use_avx2 = want && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt");
#endif
    return kernel_simd(self, NULL);
}

static PyMethodDef kernel_methods[] = {
    {"chunk", kernel_chunk, METH_VARARGS,
     "chunk(ref, cand, rtype, ctype, rtol, atol, ulp_mode, ulp_m, ulp_emin) -> tuple of chunk partials"},
    {"stages", kernel_stages, METH_VARARGS,
     "stages(refs, cands, rtype, ctype, rtol, atol, ulp_mode, ulp_m, ulp_emin, ints, floats): many small stages, "
     "one chunk each"},
    {"rows", kernel_rows, METH_VARARGS,
     "rows(ref, cand, count, rtype, ctype, rtol, atol, ulp_mode, ulp_m, ulp_emin, ints, floats): count stages of "
     "one size, back to back in two buffers, one chunk each"},
    {"simd", kernel_simd, METH_NOARGS, "simd() -> name of the code path the kernel runs"},
    {"set_simd", kernel_set_simd, METH_O,
     "set_simd(enable) -> simd(); enable=False forces the baseline code (for tests), True picks the best"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "parity.compare._kernel",
    "Fused single-pass per-chunk metric accumulation (see parity.compare.metrics).", -1, kernel_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernel(void) {
#if HAVE_AVX2_CLONE
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt");
#endif
    return PyModule_Create(&kernel_module);
}
