/*
 * parity.trace._stage -- CRC-32 (zlib / IEEE 802.3, reflected polynomial 0xEDB88320) at memory speed,
 * and a fused "copy into a staging buffer and checksum it" for the capture hook.
 *
 * Every function gives exactly the value of the stdlib's zlib.crc32 (same polynomial, same pre- and
 * post-inversion, same `value` continuation), so trace files checksummed here verify with zlib.
 *
 * Python API:
 *   crc32(data, value=0) -> int
 *       zlib.crc32(data, value).  data: any object exporting a C-contiguous buffer (bytes, bytearray,
 *       memoryview, NumPy array, ...; read as raw bytes); a non-contiguous one raises BufferError or
 *       ValueError (whichever its exporter raises).  value is taken modulo 2**32, as zlib does.
 *       The GIL is released for inputs of 64 KiB or more.
 *   copy_crc32(dst, src, value=0, *, threads=2) -> int
 *       copies src into dst (a writable C-contiguous buffer of the same length in bytes; ValueError
 *       naming both lengths otherwise) and returns zlib.crc32(src, value), reading src once: each
 *       block is loaded, stored to dst and folded into the CRC.  Any alignment of dst and src.
 *       Buffers of 8 MiB or more are split over up to `threads` threads (pthreads, parts of at least
 *       4 MiB; threads=1 keeps it in the calling thread), each copying and checksumming its part;
 *       the parts' CRCs are then combined.  Copies of 8 MiB or more use non-temporal stores
 *       (as memcpy does for large copies), so dst does not evict the cache.  Overlapping dst and src are
 *       allowed (then src is read twice: checksum first, then memmove).  GIL released from 64 KiB.
 *   crc32_combine(crc1, crc2, len2) -> int
 *       the CRC of A + B from crc1 = crc32(A), crc2 = crc32(B) and len2 = len(B) >= 0, as zlib's
 *       crc32_combine: crc1 * x^(8 len2) + crc2 in GF(2)[x] / P (square-and-multiply over a table
 *       of x^(2^k) mod P, so at most 64 multiplications; about a microsecond).
 *   implementation() -> "vpclmul" | "pclmul" | "table": the code path in use.
 *   _set_implementation(name) -> implementation(): testing hook; ValueError where the CPU lacks it.
 *   _fold_constants() -> dict: the folding and Barrett constants below, for the tests to re-derive.
 *   _set_split_min(nbytes) -> previous: copy_crc32 splits copies of at least nbytes (default 8 MiB)
 *       over its threads, in parts of at least half that (tuning hook; on a 2-core box where torch's
 *       OpenMP worker spins between ops, splitting the capture's 1-6 MiB copies was slower).
 *   _set_nt_min(nbytes) -> previous: copies of at least nbytes (default 8 MiB) use non-temporal
 *       stores (tuning hook for the benchmark).
 *   write_file(tmp, final, header, data, size, direct=True) -> bool
 *       write header then data[:size] to a new file tmp (created O_EXCL | O_NOFOLLOW: an existing file
 *       or link there is an error, FileExistsError or OSError(ELOOP), and is left alone), then rename it
 *       to final, all with the GIL
 *       released (a writer thread then never makes the capturing thread wait for the GIL between
 *       system calls).  With direct I/O (O_DIRECT: the disk reads the buffer itself, no copy into the
 *       page cache) when direct is true, data starts on a 4096-byte boundary and len(header) is a
 *       multiple of 4096; the last partial page goes out zero-padded from data
 *       (which must then have room up to the next 4096-byte boundary; the padding is overwritten
 *       with zeros) or, without room, as an ordinary write.  A file system that refuses direct I/O
 *       (EINVAL) gets ordinary writes instead.  Returns whether direct I/O was used; OSError naming
 *       tmp on failure (tmp is then removed).  data must be writable.
 *   Environment: PARITY_CRC_PORTABLE=1 (any value but "" and "0"), read at import, forces "table".
 *
 * Method (Intel, "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ", bit-reflected form).
 * Think of the message as a polynomial over GF(2), its first bit (bit 0 of byte 0: the CRC is
 * reflected) the highest power.  The CRC register after a message M is M * x^32 mod P (the zlib
 * pre-inversion is XORed into the first four bytes).  A 16-byte block loaded little-endian into an
 * XMM register holds, at bit i, the coefficient of x^(127-i) relative to the block's end; so the
 * low qword L holds the higher powers: block = L*x^64 + H.  For a 64-bit operand a whose bit i
 * stands for x^(s-i), and b whose bit j stands for x^(t-j), the carry-less product a (x) b has at
 * bit k the coefficient of x^(s+t-k): shifts add.  Hence:
 *
 *   fold by D bits (the block moves D bits towards the end of the message, onto a new block):
 *       block * x^D = L * x^(D+64) + H * x^D  ==  clmul(L, k_lo) ^ clmul(H, k_hi)   (mod P)
 *       with k = reflect64(x^e mod P), e = D+63 for k_lo and D-1 for k_hi,
 *       where reflect64(c) puts the coefficient of x^j at bit 63-j (a 32-bit remainder: bits 32..63).
 *   The main loop keeps 4 independent 16-byte lanes (D = 512 bits) or, with VPCLMULQDQ, 8 YMM
 *   registers of two lanes each (D = 2048), then folds them into one (8 -> 4 YMM: D = 1024; 4 -> 1:
 *   D = 256; the two halves of the last YMM and any further whole 16-byte blocks: D = 128).  Every
 *   line of the input is prefetched 4 KiB ahead (PF_DIST).
 *   reduction of the last 128-bit block v (degrees 127..0) to the register = v * x^32 mod P:
 *       t = clmul(v.lo, reflect64(x^95 mod P)) ^ (v >> 32 bits): bits 32..127 of t, read as
 *           degrees 63..-32, are == v (mod P) (bits 0..31 of t, v.lo's leftovers, are ignored)
 *       u = (clmul(t.lo & 0xffffffff00000000, reflect64(x^63 mod P)) ^ t).hi: 64 bits, read as
 *           degrees 31..-32 == v, so U = u read as degrees 63..0 == v * x^32
 *       Barrett: with mu = floor(x^64 / P) (33 bits) and A = the upper half of U (bits 0..31 of u),
 *           q = floor(A * mu / x^32) = floor(U / P), and U + q * P (degree < 32) is the register:
 *           two more clmuls, with reflect33(mu) = 0x1F7011641 and reflect33(P) = 0x1DB710641,
 *           where reflect33 puts the coefficient of x^j at bit 32-j.
 *   A final partial block (fewer than 16 bytes) goes through the table code.
 * The constants are computed in polynomial arithmetic by tests/trace/test_stage_crc.py and compared
 * with _fold_constants().
 *
 * Portable path ("table": no PCLMULQDQ, not x86-64, or PARITY_CRC_PORTABLE): slice-by-8 tables; from
 * 4 KiB on, the four quarters of the input run as four interleaved chains (one chain alone waits on
 * its table loads) and are joined with x^(8 L) multiplications, which brings it to zlib's speed.
 *
 * Dispatch: no -m flags are needed; the PCLMULQDQ code is compiled with target("pclmul,sse4.1") and
 * the VPCLMULQDQ code with target(... "avx2,vpclmulqdq") function attributes and picked at load time
 * by __builtin_cpu_supports (GCC and Clang on x86-64).  Elsewhere only the table code is built.
 * Build flags: -DPARITY_CRC_NO_SIMD keeps only the table code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if !defined(_WIN32)
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>
#define HAVE_POSIX_IO 1
#else
#define HAVE_POSIX_IO 0
#endif

#if !defined(_WIN32)
#include <pthread.h>
#define HAVE_THREADS 1
#else
#define HAVE_THREADS 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define AI static inline __attribute__((always_inline))
#else
#define AI static inline
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(PARITY_CRC_NO_SIMD)
#define HAVE_CLMUL 1
#include <immintrin.h>
#else
#define HAVE_CLMUL 0
#endif

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LITTLE_ENDIAN_HOST 1
#else
#define LITTLE_ENDIAN_HOST 0
#endif

#define POLY_REFLECTED 0xEDB88320u
#define GIL_MIN ((size_t)64 << 10)        /* release the GIL from this many bytes */
#define SPLIT_MIN_DEFAULT ((size_t)8 << 20) /* copy_crc32: split over threads from this many bytes, */
static size_t split_min = SPLIT_MIN_DEFAULT;  /* in parts of at least half that (_set_split_min) */
#define MAX_THREADS 16
#define NT_MIN_DEFAULT ((size_t)8 << 20) /* copy: non-temporal stores from this many bytes */

enum { IMPL_TABLE = 0, IMPL_PCLMUL = 1, IMPL_VPCLMUL = 2 };
static const char *const IMPL_NAMES[] = {"table", "pclmul", "vpclmul"};
static int impl = IMPL_TABLE;     /* in use */
static int impl_best = IMPL_TABLE; /* the best this CPU has */
static size_t nt_min = NT_MIN_DEFAULT;

/* ------------------------------------------------------------------------------------------------ */
/* GF(2)[x] / P arithmetic on reflected 32-bit values (bit i = coefficient of x^(31-i))             */

static uint32_t crc_table[8][256]; /* crc_table[k][b]: register after byte b then k zero bytes */
static uint32_t x2n_table[67];     /* x^(2^k) mod P, k < 3 + 64 */

/* a * b mod P (Horner from x^31 down: times x is a shift right, and x^32 == P + x^32 == 0xEDB88320) */
static uint32_t mulmod(uint32_t a, uint32_t b) {
    uint32_t r = 0;
    for (int i = 0; i < 32; i++) {
        r = (r >> 1) ^ (POLY_REFLECTED & (0u - (r & 1u)));
        r ^= b & (0u - ((a >> i) & 1u));
    }
    return r;
}

/* x^(8 n) mod P */
static uint32_t x8nmod(uint64_t n) {
    uint32_t r = 0x80000000u; /* x^0 */
    int k = 3;                /* x^(8 n) = x^(n * 2^3) */
    while (n) {
        if (n & 1u) r = mulmod(r, x2n_table[k]);
        n >>= 1;
        k++;
    }
    return r;
}

/* zlib's crc32_combine (conditioned CRCs: the inversions cancel) */
static uint32_t combine(uint32_t crc1, uint32_t crc2, uint64_t len2) {
    return mulmod(crc1, x8nmod(len2)) ^ crc2;
}

static void tables_init(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t r = b;
        for (int j = 0; j < 8; j++) r = (r >> 1) ^ (POLY_REFLECTED & (0u - (r & 1u)));
        crc_table[0][b] = r;
    }
    for (int k = 1; k < 8; k++)
        for (int b = 0; b < 256; b++)
            crc_table[k][b] = (crc_table[k - 1][b] >> 8) ^ crc_table[0][crc_table[k - 1][b] & 0xffu];
    x2n_table[0] = 0x40000000u; /* x^1 */
    for (int k = 1; k < 67; k++) x2n_table[k] = mulmod(x2n_table[k - 1], x2n_table[k - 1]);
}

/* ------------------------------------------------------------------------------------------------ */
/* portable path: slice-by-8 (copy != 0: also store each word to d)                                  */

/* the register after the 8 bytes w (little-endian, the register already XORed in) */
#define SLICE8(w)                                                                                         \
    (crc_table[7][(w) & 0xffu] ^ crc_table[6][((w) >> 8) & 0xffu] ^ crc_table[5][((w) >> 16) & 0xffu] ^ \
     crc_table[4][((w) >> 24) & 0xffu] ^ crc_table[3][((w) >> 32) & 0xffu] ^                            \
     crc_table[2][((w) >> 40) & 0xffu] ^ crc_table[1][((w) >> 48) & 0xffu] ^ crc_table[0][(w) >> 56])

AI uint32_t table_t(uint32_t reg, const unsigned char *s, unsigned char *d, size_t n, int copy) {
#if LITTLE_ENDIAN_HOST
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        if (copy) {
            memcpy(d, &w, 8);
            d += 8;
        }
        w ^= reg;
        reg = SLICE8(w);
        s += 8;
        n -= 8;
    }
#endif
    while (n--) {
        unsigned char c = *s++;
        if (copy) *d++ = c;
        reg = (reg >> 8) ^ crc_table[0][(reg ^ c) & 0xffu];
    }
    return reg;
}

#if LITTLE_ENDIAN_HOST
/* Large inputs: four quarters at once (one slice-by-8 chain alone waits on its loads' latency),
   registers r1..r3 starting from 0; then, with X = x^(8 L) for quarters of L bytes, the register
   of the whole is ((r0 X + r1) X + r2) X + r3, and the bytes after the quarters follow. */
AI uint32_t table4_t(uint32_t reg, const unsigned char *s, unsigned char *d, size_t n, int copy) {
    if (n < 4096) return table_t(reg, s, d, n, copy);
    size_t len = (n / 4) & ~(size_t)7;
    uint32_t r0 = reg, r1 = 0, r2 = 0, r3 = 0;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, s + i, 8);
        memcpy(&w1, s + len + i, 8);
        memcpy(&w2, s + 2 * len + i, 8);
        memcpy(&w3, s + 3 * len + i, 8);
        if (copy) {
            memcpy(d + i, &w0, 8);
            memcpy(d + len + i, &w1, 8);
            memcpy(d + 2 * len + i, &w2, 8);
            memcpy(d + 3 * len + i, &w3, 8);
        }
        w0 ^= r0;
        w1 ^= r1;
        w2 ^= r2;
        w3 ^= r3;
        r0 = SLICE8(w0);
        r1 = SLICE8(w1);
        r2 = SLICE8(w2);
        r3 = SLICE8(w3);
    }
    uint32_t x = x8nmod(len);
    reg = mulmod(mulmod(mulmod(r0, x) ^ r1, x) ^ r2, x) ^ r3;
    return table_t(reg, s + 4 * len, copy ? d + 4 * len : NULL, n - 4 * len, copy);
}
#else
#define table4_t table_t
#endif

static uint32_t table_crc(uint32_t reg, const unsigned char *s, size_t n) { return table4_t(reg, s, NULL, n, 0); }
static uint32_t table_copy(uint32_t reg, const unsigned char *s, unsigned char *d, size_t n) {
    return table4_t(reg, s, d, n, 1);
}

/* ------------------------------------------------------------------------------------------------ */
/* PCLMULQDQ / VPCLMULQDQ folding                                                                    */

/* k = reflect64(x^e mod P); derivation above, values checked by the tests */
#define K575 0x653d982200000000ULL  /* fold 512 bits, low qword */
#define K511 0xcad38e8f00000000ULL  /*                high qword */
#define K2111 0x7cc8e1e700000000ULL /* fold 2048 bits */
#define K2047 0x03f9f86300000000ULL
#define K1087 0x7d657a1000000000ULL /* fold 1024 bits */
#define K1023 0x7406fa9500000000ULL
#define K319 0x9570d49500000000ULL  /* fold 256 bits */
#define K255 0x01b5fd1d00000000ULL
#define K191 0x65673b4600000000ULL  /* fold 128 bits */
#define K127 0x9ba54c6f00000000ULL
#define K95 0xccaa009e00000000ULL   /* reduction 128 -> 96 bits */
#define K63 0xb8bc676500000000ULL   /* reduction 96 -> 64 bits */
#define MU33 0x1f7011641ULL         /* reflect33(floor(x^64 / P)) */
#define POLY33 0x1db710641ULL       /* reflect33(P) */

#if HAVE_CLMUL

/* software prefetch distance of the main loops (bytes; 0: none).  The hardware prefetcher alone
   left the vpclmul loop at ~13 GB/s on a 256 MiB buffer where a plain read runs at ~15; with a
   prefetch of every line 4 KiB ahead it reads at the memory's speed. */
#ifndef PF_DIST
#define PF_DIST 4096
#endif

enum { M_NONE = 0, M_COPY = 1, M_STREAM = 2 }; /* what is done with each block: nothing, store, stream */

#define TGT_PCLMUL __attribute__((target("pclmul,sse4.1")))
#define TGT_VPCLMUL __attribute__((target("pclmul,sse4.1,avx,avx2,vpclmulqdq")))
#define PAI static inline __attribute__((always_inline)) TGT_PCLMUL
#define VAI static inline __attribute__((always_inline)) TGT_VPCLMUL

AI long long q64(unsigned long long v) { long long r; memcpy(&r, &v, 8); return r; }

PAI __m128i load16(const unsigned char *p) { return _mm_loadu_si128((const __m128i *)(const void *)p); }

PAI void put16(unsigned char *d, __m128i v, int mode) {
    if (mode == M_COPY) _mm_storeu_si128((__m128i *)(void *)d, v);
    else if (mode == M_STREAM) _mm_stream_si128((__m128i *)(void *)d, v); /* d 16-byte aligned */
}

/* == v * x^D (mod P), in 128 bits, for the constants k = (k_lo, k_hi) of the distance D */
PAI __m128i fold16(__m128i v, __m128i k) {
    return _mm_xor_si128(_mm_clmulepi64_si128(v, k, 0x00), _mm_clmulepi64_si128(v, k, 0x11));
}

/* the register (v * x^32 mod P) of the last whole block v */
PAI uint32_t reduce128(__m128i v) {
    const __m128i k = _mm_set_epi64x(q64(K63), q64(K95));
    __m128i t = _mm_xor_si128(_mm_clmulepi64_si128(v, k, 0x00), _mm_srli_si128(v, 4));
    __m128i th = _mm_and_si128(t, _mm_set_epi64x(0, q64(0xffffffff00000000ULL)));
    uint64_t u = (uint64_t)_mm_extract_epi64(_mm_xor_si128(_mm_clmulepi64_si128(th, k, 0x10), t), 1);
    const __m128i b = _mm_set_epi64x(q64(POLY33), q64(MU33));
    __m128i q = _mm_clmulepi64_si128(_mm_cvtsi64_si128(q64(u & 0xffffffffULL)), b, 0x00);
    q = _mm_and_si128(q, _mm_cvtsi32_si128(-1));
    uint64_t qp = (uint64_t)_mm_cvtsi128_si64(_mm_clmulepi64_si128(q, b, 0x10));
    return (uint32_t)((u ^ qp) >> 32);
}

/* n >= 64.  mode M_STREAM: d is 16-byte aligned. */
PAI uint32_t fold_sse_t(uint32_t reg, const unsigned char *s, unsigned char *d, size_t n, int mode) {
    const __m128i k4 = _mm_set_epi64x(q64(K511), q64(K575));
    const __m128i k1 = _mm_set_epi64x(q64(K127), q64(K191));
    __m128i x0 = load16(s), x1 = load16(s + 16), x2 = load16(s + 32), x3 = load16(s + 48);
    if (mode) {
        put16(d, x0, mode);
        put16(d + 16, x1, mode);
        put16(d + 32, x2, mode);
        put16(d + 48, x3, mode);
    }
    x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)reg));
    size_t i = 64;
    for (; n - i >= 64; i += 64) {
        if (PF_DIST && n - i >= 64 + PF_DIST) _mm_prefetch((const char *)(s + i + PF_DIST), _MM_HINT_T0);
        __m128i y0 = load16(s + i), y1 = load16(s + i + 16), y2 = load16(s + i + 32), y3 = load16(s + i + 48);
        if (mode) {
            put16(d + i, y0, mode);
            put16(d + i + 16, y1, mode);
            put16(d + i + 32, y2, mode);
            put16(d + i + 48, y3, mode);
        }
        x0 = _mm_xor_si128(fold16(x0, k4), y0);
        x1 = _mm_xor_si128(fold16(x1, k4), y1);
        x2 = _mm_xor_si128(fold16(x2, k4), y2);
        x3 = _mm_xor_si128(fold16(x3, k4), y3);
    }
    __m128i v = _mm_xor_si128(fold16(x0, k1), x1);
    v = _mm_xor_si128(fold16(v, k1), x2);
    v = _mm_xor_si128(fold16(v, k1), x3);
    for (; n - i >= 16; i += 16) {
        __m128i y = load16(s + i);
        if (mode) put16(d + i, y, mode);
        v = _mm_xor_si128(fold16(v, k1), y);
    }
    if (mode == M_STREAM) _mm_sfence();
    reg = reduce128(v);
    return mode ? table_copy(reg, s + i, d + i, n - i) : table_crc(reg, s + i, n - i);
}

VAI __m256i load32(const unsigned char *p) { return _mm256_loadu_si256((const __m256i *)(const void *)p); }

VAI void put32(unsigned char *d, __m256i v, int mode) {
    if (mode == M_COPY) _mm256_storeu_si256((__m256i *)(void *)d, v);
    else if (mode == M_STREAM) _mm256_stream_si256((__m256i *)(void *)d, v); /* d 32-byte aligned */
}

VAI __m256i fold32(__m256i v, __m256i k) {
    return _mm256_xor_si256(_mm256_clmulepi64_epi128(v, k, 0x00), _mm256_clmulepi64_epi128(v, k, 0x11));
}

/* n >= 256.  mode M_STREAM: d is 32-byte aligned. */
VAI uint32_t fold_avx_t(uint32_t reg, const unsigned char *s, unsigned char *d, size_t n, int mode) {
    const __m256i k16 = _mm256_set_epi64x(q64(K2047), q64(K2111), q64(K2047), q64(K2111));
    const __m256i k8 = _mm256_set_epi64x(q64(K1023), q64(K1087), q64(K1023), q64(K1087));
    const __m256i k2 = _mm256_set_epi64x(q64(K255), q64(K319), q64(K255), q64(K319));
    const __m128i k1 = _mm_set_epi64x(q64(K127), q64(K191));
    __m256i x0 = load32(s), x1 = load32(s + 32), x2 = load32(s + 64), x3 = load32(s + 96);
    __m256i x4 = load32(s + 128), x5 = load32(s + 160), x6 = load32(s + 192), x7 = load32(s + 224);
    if (mode) {
        put32(d, x0, mode);
        put32(d + 32, x1, mode);
        put32(d + 64, x2, mode);
        put32(d + 96, x3, mode);
        put32(d + 128, x4, mode);
        put32(d + 160, x5, mode);
        put32(d + 192, x6, mode);
        put32(d + 224, x7, mode);
    }
    x0 = _mm256_xor_si256(x0, _mm256_set_epi32(0, 0, 0, 0, 0, 0, 0, (int)reg));
    size_t i = 256;
    for (; n - i >= 256; i += 256) {
        if (PF_DIST && n - i >= 256 + PF_DIST) {
            _mm_prefetch((const char *)(s + i + PF_DIST), _MM_HINT_T0);
            _mm_prefetch((const char *)(s + i + PF_DIST + 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(s + i + PF_DIST + 128), _MM_HINT_T0);
            _mm_prefetch((const char *)(s + i + PF_DIST + 192), _MM_HINT_T0);
        }
        __m256i y0 = load32(s + i), y1 = load32(s + i + 32), y2 = load32(s + i + 64), y3 = load32(s + i + 96);
        __m256i y4 = load32(s + i + 128), y5 = load32(s + i + 160), y6 = load32(s + i + 192),
                y7 = load32(s + i + 224);
        if (mode) {
            put32(d + i, y0, mode);
            put32(d + i + 32, y1, mode);
            put32(d + i + 64, y2, mode);
            put32(d + i + 96, y3, mode);
            put32(d + i + 128, y4, mode);
            put32(d + i + 160, y5, mode);
            put32(d + i + 192, y6, mode);
            put32(d + i + 224, y7, mode);
        }
        x0 = _mm256_xor_si256(fold32(x0, k16), y0);
        x1 = _mm256_xor_si256(fold32(x1, k16), y1);
        x2 = _mm256_xor_si256(fold32(x2, k16), y2);
        x3 = _mm256_xor_si256(fold32(x3, k16), y3);
        x4 = _mm256_xor_si256(fold32(x4, k16), y4);
        x5 = _mm256_xor_si256(fold32(x5, k16), y5);
        x6 = _mm256_xor_si256(fold32(x6, k16), y6);
        x7 = _mm256_xor_si256(fold32(x7, k16), y7);
    }
    /* 8 registers -> 4 (each moves 1024 bits onto the one 4 after it) -> 1 */
    x0 = _mm256_xor_si256(fold32(x0, k8), x4);
    x1 = _mm256_xor_si256(fold32(x1, k8), x5);
    x2 = _mm256_xor_si256(fold32(x2, k8), x6);
    x3 = _mm256_xor_si256(fold32(x3, k8), x7);
    __m256i w = _mm256_xor_si256(fold32(x0, k2), x1);
    w = _mm256_xor_si256(fold32(w, k2), x2);
    w = _mm256_xor_si256(fold32(w, k2), x3);
    for (; n - i >= 32; i += 32) {
        __m256i y = load32(s + i);
        if (mode) put32(d + i, y, mode);
        w = _mm256_xor_si256(fold32(w, k2), y);
    }
    __m128i v = _mm_xor_si128(fold16(_mm256_castsi256_si128(w), k1), _mm256_extracti128_si256(w, 1));
    for (; n - i >= 16; i += 16) {
        __m128i y = load16(s + i);
        if (mode) put16(d + i, y, mode); /* when streaming, d + i is 16-byte aligned */
        v = _mm_xor_si128(fold16(v, k1), y);
    }
    if (mode == M_STREAM) _mm_sfence();
    reg = reduce128(v);
    return mode ? table_copy(reg, s + i, d + i, n - i) : table_crc(reg, s + i, n - i);
}

typedef uint32_t (*fold_fn)(uint32_t, const unsigned char *, unsigned char *, size_t);

#define FOLD_VARIANT(NAME, TGT, BODY, MODE)                                                    \
    TGT static uint32_t NAME(uint32_t reg, const unsigned char *s, unsigned char *d, size_t n) { \
        return BODY(reg, s, d, n, MODE);                                                       \
    }
FOLD_VARIANT(pclmul_crc, TGT_PCLMUL, fold_sse_t, M_NONE)
FOLD_VARIANT(pclmul_copy, TGT_PCLMUL, fold_sse_t, M_COPY)
FOLD_VARIANT(pclmul_stream, TGT_PCLMUL, fold_sse_t, M_STREAM)
FOLD_VARIANT(vpclmul_crc, TGT_VPCLMUL, fold_avx_t, M_NONE)
FOLD_VARIANT(vpclmul_copy, TGT_VPCLMUL, fold_avx_t, M_COPY)
FOLD_VARIANT(vpclmul_stream, TGT_VPCLMUL, fold_avx_t, M_STREAM)

static const fold_fn PCLMUL_FNS[3] = {pclmul_crc, pclmul_copy, pclmul_stream};
static const fold_fn VPCLMUL_FNS[3] = {vpclmul_crc, vpclmul_copy, vpclmul_stream};

#endif /* HAVE_CLMUL */

/* ------------------------------------------------------------------------------------------------ */
/* driver                                                                                            */

/* The register after s[0..n) from register reg with implementation `which`; d != NULL: also copy
   s to d (no overlap), with non-temporal stores if nt and n is large enough.  (The Python functions
   read the globals impl and nt_min while they hold the GIL and pass them down.) */
static uint32_t crc_engine(int which, uint32_t reg, const unsigned char *s, unsigned char *d, size_t n, int nt) {
#if HAVE_CLMUL
    if (which != IMPL_TABLE && n >= 64) {
        int mode = d == NULL ? M_NONE : M_COPY;
        if (mode == M_COPY && nt && n >= 4096) {
            size_t h = (size_t)(0u - (uintptr_t)d) & 63u; /* up to the next cache line */
            reg = table_copy(reg, s, d, h);
            s += h;
            d += h;
            n -= h;
            mode = M_STREAM;
        }
        if (which == IMPL_VPCLMUL && n >= 512) return VPCLMUL_FNS[mode](reg, s, d, n);
        return PCLMUL_FNS[mode](reg, s, d, n);
    }
#else
    (void)which;
    (void)nt;
#endif
    return d == NULL ? table_crc(reg, s, n) : table_copy(reg, s, d, n);
}

typedef struct {
    const unsigned char *s;
    unsigned char *d;
    size_t n;
    uint32_t reg;
    int which, nt;
} Job;

static void *job_run(void *arg) {
    Job *j = (Job *)arg;
    j->reg = crc_engine(j->which, j->reg, j->s, j->d, j->n, j->nt);
    return NULL;
}

/* zlib.crc32(s[0..n), value), copying s to d; split over up to `threads` threads when large */
static uint32_t copy_crc_parallel(int which, uint32_t value, const unsigned char *s, unsigned char *d, size_t n,
                                  int threads, int nt) {
    size_t workers = 1;
    if (n >= split_min && threads > 1) {
        workers = n / (split_min / 2 > 4096 ? split_min / 2 : 4096);
        if (workers > (size_t)threads) workers = (size_t)threads;
        if (workers > MAX_THREADS) workers = MAX_THREADS;
    }
    if (workers <= 1) return ~crc_engine(which, ~value, s, d, n, nt);
    Job jobs[MAX_THREADS];
    size_t part = (n / workers) & ~(size_t)4095; /* page-aligned offsets */
    for (size_t k = 0; k < workers; k++) {
        jobs[k].s = s + k * part;
        jobs[k].d = d + k * part;
        jobs[k].n = k + 1 < workers ? part : n - k * part;
        jobs[k].reg = k == 0 ? ~value : 0xffffffffu; /* part k > 0: crc32(part, 0) */
        jobs[k].which = which;
        jobs[k].nt = nt;
    }
#if HAVE_THREADS
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (size_t k = 1; k < workers; k++) started[k] = pthread_create(&tids[k], NULL, job_run, &jobs[k]) == 0;
    job_run(&jobs[0]);
    for (size_t k = 1; k < workers; k++) {
        if (started[k]) pthread_join(tids[k], NULL);
        else job_run(&jobs[k]); /* could not start a thread: do its part here */
    }
#else
    for (size_t k = 0; k < workers; k++) job_run(&jobs[k]);
#endif
    uint32_t crc = ~jobs[0].reg;
    for (size_t k = 1; k < workers; k++) crc = combine(crc, ~jobs[k].reg, jobs[k].n);
    return crc;
}

/* ------------------------------------------------------------------------------------------------ */
/* Python bindings                                                                                   */

static PyObject *stage_crc32(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"data", "value", NULL};
    PyObject *obj;
    unsigned int value = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|I:crc32", kwlist, &obj, &value)) return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(obj, &b, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *s = (const unsigned char *)b.buf;
    size_t n = (size_t)b.len;
    uint32_t reg = ~(uint32_t)value;
    int which = impl;
    if (n >= GIL_MIN) {
        Py_BEGIN_ALLOW_THREADS
        reg = crc_engine(which, reg, s, NULL, n, 0);
        Py_END_ALLOW_THREADS
    } else {
        reg = crc_engine(which, reg, s, NULL, n, 0);
    }
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong((unsigned long)~reg);
}

/* Copy n bytes from s to d and return their CRC-32 (continuing value); memmove semantics when they
 * overlap. The GIL is released for large copies. */
static uint32_t copy_crc_released(const unsigned char *s, unsigned char *d, size_t n, uint32_t value, int threads) {
    uintptr_t su = (uintptr_t)s, du = (uintptr_t)d;
    int overlap = n > 0 && su < du + n && du < su + n;
    uint32_t crc;
    int which = impl, nt = n >= nt_min;
    PyThreadState *ts = n >= GIL_MIN ? PyEval_SaveThread() : NULL;
    if (!overlap) {
        crc = copy_crc_parallel(which, value, s, d, n, threads, nt);
    } else { /* checksum first, then move */
        crc = ~crc_engine(which, ~value, s, NULL, n, 0);
        if (su != du) memmove(d, s, n);
    }
    if (ts != NULL) PyEval_RestoreThread(ts);
    return crc;
}

static PyObject *stage_copy_crc32(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"dst", "src", "value", "threads", NULL};
    PyObject *dobj, *sobj;
    unsigned int value = 0;
    int threads = 2;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|I$i:copy_crc32", kwlist, &dobj, &sobj, &value, &threads))
        return NULL;
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "copy_crc32: threads must be >= 1, got %d", threads);
        return NULL;
    }
    Py_buffer db, sb;
    if (PyObject_GetBuffer(dobj, &db, PyBUF_WRITABLE) < 0) return NULL;
    if (PyObject_GetBuffer(sobj, &sb, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&db);
        return NULL;
    }
    PyObject *res = NULL;
    if (db.len != sb.len) {
        PyErr_Format(PyExc_ValueError, "copy_crc32: dst has %zd bytes but src has %zd bytes", db.len, sb.len);
        goto done;
    }
    res = PyLong_FromUnsignedLong((unsigned long)copy_crc_released(
        (const unsigned char *)sb.buf, (unsigned char *)db.buf, (size_t)sb.len, (uint32_t)value, threads));
done:
    PyBuffer_Release(&sb);
    PyBuffer_Release(&db);
    return res;
}

/* copy_crc32_at(dst, offset, address, nbytes): copy_crc32 from raw memory into dst[offset:offset+nbytes].
 * For the capture hooks: a tensor's bytes by its data pointer, without making buffer objects for it
 * (a reshape, a dtype view and a NumPy array per stage cost more than copying a small value). The
 * caller keeps the memory alive for the call. */
static PyObject *stage_copy_crc32_at(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *dobj, *aobj;
    Py_ssize_t offset, nbytes;
    if (!PyArg_ParseTuple(args, "OnOn:copy_crc32_at", &dobj, &offset, &aobj, &nbytes)) return NULL;
    void *addr = PyLong_AsVoidPtr(aobj);
    if (addr == NULL && PyErr_Occurred()) return NULL;
    Py_buffer db;
    if (PyObject_GetBuffer(dobj, &db, PyBUF_WRITABLE) < 0) return NULL;
    PyObject *res = NULL;
    if (offset < 0 || nbytes < 0 || offset > db.len || nbytes > db.len - offset) {
        PyErr_Format(PyExc_ValueError, "copy_crc32_at: bytes [%zd, %zd + %zd) are outside dst of %zd bytes",
                     offset, offset, nbytes, db.len);
        goto done;
    }
    if (nbytes > 0 && addr == NULL) {
        PyErr_SetString(PyExc_ValueError, "copy_crc32_at: null source address");
        goto done;
    }
    res = PyLong_FromUnsignedLong((unsigned long)copy_crc_released(
        (const unsigned char *)addr, (unsigned char *)db.buf + offset, (size_t)nbytes, 0u, 2));
done:
    PyBuffer_Release(&db);
    return res;
}

static PyObject *stage_crc32_combine(PyObject *self, PyObject *args) {
    (void)self;
    unsigned int crc1, crc2;
    long long len2;
    if (!PyArg_ParseTuple(args, "IIL:crc32_combine", &crc1, &crc2, &len2)) return NULL;
    if (len2 < 0) {
        PyErr_Format(PyExc_ValueError, "crc32_combine: len2 must be >= 0, got %lld", len2);
        return NULL;
    }
    return PyLong_FromUnsignedLong((unsigned long)combine((uint32_t)crc1, (uint32_t)crc2, (uint64_t)len2));
}

static PyObject *stage_implementation(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(IMPL_NAMES[impl]);
}

static PyObject *stage_set_implementation(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) return NULL;
    for (int k = 0; k < 3; k++) {
        if (strcmp(name, IMPL_NAMES[k]) == 0) {
            if (k > impl_best) {
                PyErr_Format(PyExc_ValueError, "implementation %R is not available on this CPU or build (best: %s)", arg,
                             IMPL_NAMES[impl_best]);
                return NULL;
            }
            impl = k;
            return stage_implementation(self, NULL);
        }
    }
    PyErr_Format(PyExc_ValueError, "unknown implementation %R (table, pclmul, vpclmul)", arg);
    return NULL;
}

static PyObject *stage_set_split_min(PyObject *self, PyObject *arg) {
    (void)self;
    Py_ssize_t v = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred()) return NULL;
    if (v < 8192) {
        PyErr_SetString(PyExc_ValueError, "_set_split_min: bytes must be >= 8192");
        return NULL;
    }
    size_t old = split_min;
    split_min = (size_t)v;
    return PyLong_FromSize_t(old);
}

static PyObject *stage_set_nt_min(PyObject *self, PyObject *arg) {
    (void)self;
    Py_ssize_t v = PyLong_AsSsize_t(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    if (v < 0) {
        PyErr_SetString(PyExc_ValueError, "_set_nt_min: bytes must be >= 0");
        return NULL;
    }
    size_t old = nt_min;
    nt_min = (size_t)v;
    return PyLong_FromSize_t(old);
}

static PyObject *stage_fold_constants(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    static const struct {
        const char *name;
        unsigned long long v;
    } C[] = {{"x^2111", K2111}, {"x^2047", K2047}, {"x^1087", K1087}, {"x^1023", K1023}, {"x^575", K575},
             {"x^511", K511},   {"x^319", K319},   {"x^255", K255},   {"x^191", K191},   {"x^127", K127},
             {"x^95", K95},     {"x^63", K63},     {"mu", MU33},      {"poly", POLY33}};
    PyObject *d = PyDict_New();
    if (d == NULL) return NULL;
    for (size_t k = 0; k < sizeof(C) / sizeof(C[0]); k++) {
        PyObject *v = PyLong_FromUnsignedLongLong(C[k].v);
        if (v == NULL || PyDict_SetItemString(d, C[k].name, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

#if HAVE_POSIX_IO
#define IO_PAGE 4096

static int pwrite_all(int fd, const unsigned char *p, size_t n, off_t off) {
    while (n) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

#ifndef O_NOFOLLOW
#define O_NOFOLLOW 0
#endif

/* Write to fd (a new, empty file) with direct I/O, switched on with fcntl.
 * 1: written with direct I/O; 0: nothing written, the file is empty again and direct I/O off (the
 * file system refused it): the caller writes ordinarily; -1: error (errno set). */
static int write_file_direct(int fd, const unsigned char *hdr, size_t hlen, unsigned char *data, size_t cap,
                             size_t size) {
#ifdef O_DIRECT
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return -1;
    if (fcntl(fd, F_SETFL, fl | O_DIRECT) != 0) return 0; /* e.g. tmpfs: no direct I/O */
    void *page = NULL;
    if (posix_memalign(&page, IO_PAGE, hlen) != 0) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(page, hdr, hlen);
    int rc = pwrite_all(fd, page, hlen, 0);
    free(page);
    size_t whole = size - size % IO_PAGE;
    if (rc == 0) rc = pwrite_all(fd, data, whole, (off_t)hlen);
    if (rc == 0 && whole < size) {
        if (cap >= whole + IO_PAGE) {
            memset(data + size, 0, whole + IO_PAGE - size);
            rc = pwrite_all(fd, data + whole, IO_PAGE, (off_t)(hlen + whole));
            if (rc == 0) rc = ftruncate(fd, (off_t)(hlen + size));
        } else {
            rc = fcntl(fd, F_SETFL, fl);
            if (rc == 0) rc = pwrite_all(fd, data + whole, size - whole, (off_t)(hlen + whole));
        }
    }
    if (rc == 0) return 1;
    int err = errno;
    if (err == EINVAL || err == EOPNOTSUPP) { /* the file system refused: start again, ordinarily */
        if (fcntl(fd, F_SETFL, fl) != 0 || ftruncate(fd, 0) != 0) return -1;
        return 0;
    }
    errno = err;
    return -1;
#else
    (void)fd; (void)hdr; (void)hlen; (void)data; (void)cap; (void)size;
    return 0;
#endif
}

static int write_file_plain(int fd, const unsigned char *hdr, size_t hlen, const unsigned char *data,
                            size_t size) {
    int rc = pwrite_all(fd, hdr, hlen, 0);
    if (rc == 0) rc = pwrite_all(fd, data, size, (off_t)hlen);
    return rc;
}

static PyObject *stage_write_file(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"tmp", "final", "header", "data", "size", "direct", NULL};
    PyObject *tmp_o = NULL, *final_o = NULL;
    Py_buffer hdr, data;
    Py_ssize_t size;
    int direct = 1;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&y*w*n|p", kwlist, PyUnicode_FSConverter, &tmp_o,
                                     PyUnicode_FSConverter, &final_o, &hdr, &data, &size, &direct)) {
        Py_XDECREF(tmp_o);
        Py_XDECREF(final_o);
        return NULL;
    }
    PyObject *result = NULL;
    if (size < 0 || size > data.len) {
        PyErr_Format(PyExc_ValueError, "write_file: size %zd is outside the buffer's %zd bytes", size, data.len);
        goto done;
    }
    const char *tmp = PyBytes_AS_STRING(tmp_o), *final = PyBytes_AS_STRING(final_o);
    int used = 0, rc = 0, err = 0;
    Py_BEGIN_ALLOW_THREADS
    /* a new file, never one (or a link) already there: the caller gives an unguessable name */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0) {
        rc = -1;
        err = errno;
    } else {
        if (direct && hdr.len % IO_PAGE == 0 && ((uintptr_t)data.buf % IO_PAGE) == 0)
            used = write_file_direct(fd, hdr.buf, (size_t)hdr.len, data.buf, (size_t)data.len, (size_t)size);
        if (used == 0) rc = write_file_plain(fd, hdr.buf, (size_t)hdr.len, data.buf, (size_t)size);
        else if (used < 0) rc = -1;
        if (rc != 0) err = errno;
        if (close(fd) != 0 && rc == 0) {
            rc = -1;
            err = errno;
        }
        if (rc == 0 && rename(tmp, final) != 0) {
            rc = -1;
            err = errno;
        }
        if (rc != 0) unlink(tmp); /* ours: created above */
    }
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        errno = err;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, tmp);
        goto done;
    }
    result = PyBool_FromLong(used > 0);
done:
    PyBuffer_Release(&hdr);
    PyBuffer_Release(&data);
    Py_DECREF(tmp_o);
    Py_DECREF(final_o);
    return result;
}
#endif

static PyMethodDef stage_methods[] = {
#if HAVE_POSIX_IO
    {"write_file", (PyCFunction)(void (*)(void))stage_write_file, METH_VARARGS | METH_KEYWORDS,
     "write_file(tmp, final, header, data, size, direct=True) -> bool: write header + data[:size] to tmp and "
     "rename it to final, GIL released; True where direct I/O was used"},
#endif
    {"crc32", (PyCFunction)(void (*)(void))stage_crc32, METH_VARARGS | METH_KEYWORDS,
     "crc32(data, value=0) -> int: zlib.crc32(data, value) of a C-contiguous buffer"},
    {"copy_crc32", (PyCFunction)(void (*)(void))stage_copy_crc32, METH_VARARGS | METH_KEYWORDS,
     "copy_crc32(dst, src, value=0, *, threads=2) -> int: copy src into dst (same length in bytes), "
     "return zlib.crc32(src, value); src is read once"},
    {"copy_crc32_at", stage_copy_crc32_at, METH_VARARGS,
     "copy_crc32_at(dst, offset, address, nbytes) -> int: copy nbytes from raw memory at address into "
     "dst[offset:offset + nbytes], return their zlib.crc32 (the caller keeps that memory alive)"},
    {"crc32_combine", stage_crc32_combine, METH_VARARGS,
     "crc32_combine(crc1, crc2, len2) -> int: crc32(A + B) from crc32(A), crc32(B) and len(B)"},
    {"implementation", stage_implementation, METH_NOARGS,
     "implementation() -> 'vpclmul' | 'pclmul' | 'table': the code path in use"},
    {"_set_implementation", stage_set_implementation, METH_O,
     "_set_implementation(name) -> implementation(); testing hook"},
    {"_set_split_min", stage_set_split_min, METH_O,
     "_set_split_min(nbytes) -> previous: copy_crc32 splits copies of at least nbytes over its threads (tuning hook)"},
    {"_set_nt_min", stage_set_nt_min, METH_O,
     "_set_nt_min(nbytes) -> previous: copies of at least nbytes use non-temporal stores (tuning hook)"},
    {"_fold_constants", stage_fold_constants, METH_NOARGS,
     "_fold_constants() -> dict of the folding / Barrett constants (for the tests)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef stage_module = {
    PyModuleDef_HEAD_INIT, "parity.trace._stage",
    "CRC-32 (zlib polynomial) at memory speed, and a fused copy + CRC-32 for staging buffers.", -1,
    stage_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__stage(void) {
    static int tables_ready = 0; /* (re-importing would only write the same values again) */
    if (!tables_ready) {
        tables_init();
        tables_ready = 1;
    }
#if HAVE_CLMUL
    __builtin_cpu_init();
    if (__builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1")) {
        impl_best = IMPL_PCLMUL;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq")) impl_best = IMPL_VPCLMUL;
    }
#endif
    const char *portable = getenv("PARITY_CRC_PORTABLE");
    impl = (portable != NULL && portable[0] != '\0' && strcmp(portable, "0") != 0) ? IMPL_TABLE : impl_best;
    return PyModule_Create(&stage_module);
}
