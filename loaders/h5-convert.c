/* SPDX-License-Identifier: MIT */
/*
 * Stored values to double (or int64), in kdlens rather than in HDF5: HDF5
 * converts float16 bit by bit in software (H5T__conv_f_f), which took a
 * third of the report's time.  float16 goes through F16C where the CPU has
 * it and a 65,536-entry table otherwise; both are exact for every half,
 * subnormals, infinities and NaN payloads included.
 */
#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_X86 1
#endif

#include <hdf5.h>

#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

/* ---- what a stored type is -------------------------------------------------- */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_ORDER H5T_ORDER_BE
#else
#define HOST_ORDER H5T_ORDER_LE
#endif

/* The bit fields of IEEE 754 binary16, 32 and 64: sign, exponent, its size,
 * mantissa size, exponent bias. */
static bool ieee_layout(hid_t type, size_t size)
{
        static const struct {
                size_t size, spos, epos, esize, msize, ebias;
        } ieee[] = {{2, 15, 10, 5, 10, 15}, {4, 31, 23, 8, 23, 127}, {8, 63, 52, 11, 52, 1023}};
        size_t spos, epos, esize, mpos, msize;

        if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0 ||
            H5Tget_norm(type) != H5T_NORM_IMPLIED)
                return false;
        for (size_t k = 0; k < sizeof(ieee) / sizeof(ieee[0]); k++)
                if (ieee[k].size == size)
                        return spos == ieee[k].spos && epos == ieee[k].epos &&
                               esize == ieee[k].esize && mpos == 0 && msize == ieee[k].msize &&
                               H5Tget_ebias(type) == ieee[k].ebias;
        return false;
}

int kdl__h5_num_of(hid_t type, struct kdl__h5_num *ret)
{
        H5T_class_t cls = H5Tget_class(type);
        H5T_order_t order = H5Tget_order(type);
        size_t size = H5Tget_size(type);
        struct kdl__h5_num t = {.size = size};

        if (size != 1 && size != 2 && size != 4 && size != 8)
                return 0;
        if ((order != H5T_ORDER_LE && order != H5T_ORDER_BE) || H5Tget_offset(type) != 0 ||
            H5Tget_precision(type) != 8 * size)
                return 0;
        if (cls == H5T_FLOAT) {
                if (size == 1 || !ieee_layout(type, size))
                        return 0;
                t.is_float = true;
        } else if (cls == H5T_INTEGER) {
                H5T_sign_t sgn = H5Tget_sign(type);

                if (sgn != H5T_SGN_NONE && sgn != H5T_SGN_2)
                        return 0;
                t.is_signed = sgn == H5T_SGN_2;
        } else {
                return 0;
        }
        t.swap = size > 1 && order != HOST_ORDER;
        *ret = t;
        return 1;
}

/* ---- float16 ---------------------------------------------------------------- */

/* binary16 bits to binary64 bits, exactly as numpy's npy_halfbits_to_doublebits. */
static uint64_t half_bits(uint16_t h)
{
        uint64_t sign = (uint64_t) (h & 0x8000u) << 48;
        unsigned e = (h >> 10) & 0x1fu, m = h & 0x3ffu;

        if (e == 0x1f) /* Inf, NaN: the payload kept, quiet bit as stored */
                return sign | 0x7ff0000000000000ULL | (uint64_t) m << 42;
        if (e == 0) {
                int shift = 0;

                if (m == 0)
                        return sign;
                while (!(m & 0x400u)) { /* subnormal: normalise */
                        m <<= 1;
                        shift++;
                }
                m &= 0x3ffu;
                return sign | (uint64_t) (1023 - 15 + 1 - shift) << 52 | (uint64_t) m << 42;
        }
        return sign | (uint64_t) (e - 15 + 1023) << 52 | (uint64_t) m << 42;
}

static double half_table[65536];
static pthread_once_t half_once = PTHREAD_ONCE_INIT;
static bool half_f16c;                                 /* the CPU can, set once */
static enum kdl__h5_half half_how = KDL__H5_HALF_AUTO; /* a test hook's choice */

static void half_init(void)
{
        for (uint32_t h = 0; h < 65536; h++) {
                uint64_t b = half_bits((uint16_t) h);

                memcpy(&half_table[h], &b, sizeof(b));
        }
#ifdef HAVE_X86
        /* F16C from CPUID, not __builtin_cpu_supports("f16c"): clang 14 knows no such name.
         * "avx" also says the OS saves the YMM state the F16C instructions use. */
        unsigned eax, ebx, ecx, edx;

        __builtin_cpu_init();
        half_f16c = __builtin_cpu_supports("avx") && __get_cpuid(1, &eax, &ebx, &ecx, &edx) &&
                    (ecx & bit_F16C);
#endif
}

bool kdl__h5_half_use(enum kdl__h5_half how)
{
        pthread_once(&half_once, half_init);
        if (how == KDL__H5_HALF_F16C && !half_f16c)
                return false;
        half_how = how;
        return true;
}

static void half_by_table(const uint16_t *src, size_t n, bool swap, double *dst)
{
        if (swap)
                for (size_t i = 0; i < n; i++)
                        dst[i] = half_table[__builtin_bswap16(src[i])];
        else
                for (size_t i = 0; i < n; i++)
                        dst[i] = half_table[src[i]];
}

#ifdef HAVE_X86
/* Eight at a time with VCVTPH2PS then VCVTPS2PD, both exact.  The hardware
 * quiets signalling NaNs; numpy keeps them as stored, so a group of eight
 * holding any NaN goes through the table instead.  Returns the values
 * converted (a multiple of 8); the caller converts the rest.
 *
 * It ends with VZEROUPPER, which GCC does not insert here (the function is
 * AVX by attribute only): upper YMM halves left dirty make every later SSE
 * instruction of the thread (all of the metrics' scalar double code, libm's
 * exp) pay a merge, which made split 10x slower after reading float16. */
__attribute__((target("avx,f16c"))) static size_t half_by_f16c(const uint16_t *src, size_t n,
                                                               bool swap, double *dst)
{
        const __m128i abs = _mm_set1_epi16(0x7fff), inf = _mm_set1_epi16(0x7c00);
        const __m128i bswap = _mm_set_epi8(14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1);
        size_t i = 0;

        for (; i + 8 <= n; i += 8) {
                __m128i h = _mm_loadu_si128((const __m128i *) (src + i));
                __m256 f;

                if (swap)
                        h = _mm_shuffle_epi8(h, bswap);
                if (_mm_movemask_epi8(_mm_cmpgt_epi16(_mm_and_si128(h, abs), inf))) {
                        half_by_table(src + i, 8, swap, dst + i);
                        continue;
                }
                f = _mm256_cvtph_ps(h);
                _mm256_storeu_pd(dst + i, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
                _mm256_storeu_pd(dst + i + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
        }
        _mm256_zeroupper();
        return i;
}
#endif

static void half_to_double(const void *src, size_t n, bool swap, double *dst)
{
        pthread_once(&half_once, half_init);
#ifdef HAVE_X86
        if (half_f16c && half_how != KDL__H5_HALF_TABLE) {
                size_t i = half_by_f16c(src, n, swap, dst);

                half_by_table((const uint16_t *) src + i, n - i, swap, dst + i);
                return;
        }
#endif
        half_by_table(src, n, swap, dst);
}

/* ---- every other type --------------------------------------------------------- */

/* One element of @size bytes at @p, byte-swapped when @swap, into a uint64. */
#define LOAD(bits, p, swap)                                                                        \
        ({                                                                                         \
                uint##bits##_t v_;                                                                 \
                memcpy(&v_, (p), sizeof(v_));                                                      \
                (swap) ? (uint##bits##_t) __builtin_bswap##bits(v_) : v_;                          \
        })

/* Load @n values of integer type @t as int64 (uint64 above INT64_MAX saturates, as HDF5's). */
static void int_to_int64(const struct kdl__h5_num *t, const unsigned char *s, size_t n,
                         int64_t *dst)
{
        for (size_t i = 0; i < n; i++, s += t->size) {
                switch (t->size) {
                case 1:
                        dst[i] = t->is_signed ? (int64_t) (int8_t) s[0] : (int64_t) s[0];
                        break;
                case 2: {
                        uint16_t v = t->swap ? LOAD(16, s, true) : LOAD(16, s, false);

                        dst[i] = t->is_signed ? (int64_t) (int16_t) v : (int64_t) v;
                        break;
                }
                case 4: {
                        uint32_t v = t->swap ? LOAD(32, s, true) : LOAD(32, s, false);

                        dst[i] = t->is_signed ? (int64_t) (int32_t) v : (int64_t) v;
                        break;
                }
                default: {
                        uint64_t v = t->swap ? LOAD(64, s, true) : LOAD(64, s, false);

                        dst[i] = t->is_signed || v <= INT64_MAX ? (int64_t) v : INT64_MAX;
                        break;
                }
                }
        }
}

/* Integers of @t to double; uint64 and int64 round to nearest, as a C cast (and HDF5). */
static void int_to_double(const struct kdl__h5_num *t, const unsigned char *s, size_t n,
                          double *dst)
{
        for (size_t i = 0; i < n; i++, s += t->size) {
                if (t->size == 8 && !t->is_signed) {
                        dst[i] = (double) (t->swap ? LOAD(64, s, true) : LOAD(64, s, false));
                } else {
                        int64_t v;

                        int_to_int64(t, s, 1, &v);
                        dst[i] = (double) v;
                }
        }
}

static void float_to_double(const struct kdl__h5_num *t, const unsigned char *s, size_t n,
                            double *dst)
{
        if (t->size == 2) {
                half_to_double(s, n, t->swap, dst);
        } else if (t->size == 4) {
                for (size_t i = 0; i < n; i++, s += 4) {
                        uint32_t b = t->swap ? LOAD(32, s, true) : LOAD(32, s, false);
                        float v;

                        memcpy(&v, &b, sizeof(v));
                        dst[i] = (double) v;
                }
        } else if (t->swap) {
                for (size_t i = 0; i < n; i++, s += 8) {
                        uint64_t b = LOAD(64, s, true);

                        memcpy(&dst[i], &b, sizeof(b));
                }
        } else {
                memcpy(dst, s, n * sizeof(double));
        }
}

void kdl__h5_convert(const struct kdl__h5_num *t, enum kdl__h5_to to, const void *src, size_t n,
                     void *dst)
{
        assert(to == KDL__H5_TO_DOUBLE || !t->is_float);
        if (to == KDL__H5_TO_INT64)
                int_to_int64(t, src, n, dst);
        else if (t->is_float)
                float_to_double(t, src, n, dst);
        else
                int_to_double(t, src, n, dst);
}

void kdl__h5_convert_tail(const struct kdl__h5_num *t, enum kdl__h5_to to, void *buf, size_t n)
{
        /* Front to back through a small copy: the raw values sit in the last
         * n * size bytes, and the conversion of element i only overwrites
         * raw bytes of elements before i + 1 (8 * (i + 1) <= 8n - (n - i - 1) * size),
         * but the copy keeps the compiler from reading a value after
         * writing over it. */
        unsigned char stage[4096];
        size_t per = sizeof(stage) / t->size, off = n * (8 - t->size);
        unsigned char *b = buf;

        if (t->size == 8 && !t->swap && (to == KDL__H5_TO_DOUBLE) == t->is_float)
                return; /* already there */
        for (size_t i = 0; i < n; i += per) {
                size_t m = n - i < per ? n - i : per;

                memcpy(stage, b + off + i * t->size, m * t->size);
                kdl__h5_convert(t, to, stage, m, b + 8 * i);
        }
}

void kdl__h5_convert_box(const struct kdl__h5_num *t, enum kdl__h5_to to, size_t ndim,
                         const void *src, const size_t *src_shape, const size_t *src_start,
                         void *dst, const size_t *dst_shape, const size_t *dst_start,
                         const size_t *count)
{
        size_t run = 1, k = ndim, idx[KDL_MAX_DIMS] = {0};
        const unsigned char *s = src;
        unsigned char *d = dst;

        assert(ndim >= 1 && ndim <= KDL_MAX_DIMS);
        /* The longest contiguous run: trailing dimensions the box spans whole
         * in both arrays merge with the one before them. */
        while (k > 0) {
                k--;
                run *= count[k];
                if (k == 0 || count[k] != src_shape[k] || count[k] != dst_shape[k])
                        break;
        }
        for (size_t j = 0; j < ndim; j++)
                if (count[j] == 0)
                        return;
        for (;;) {
                size_t so = 0, dof = 0;

                for (size_t j = 0; j < ndim; j++) {
                        size_t at = j < k ? idx[j] : 0;

                        so = so * src_shape[j] + src_start[j] + at;
                        dof = dof * dst_shape[j] + dst_start[j] + at;
                }
                kdl__h5_convert(t, to, s + so * t->size, run, d + dof * 8);
                /* Next index over the dimensions before k (an odometer). */
                size_t j = k;

                while (j > 0 && ++idx[j - 1] == count[j - 1])
                        idx[--j] = 0;
                if (j == 0)
                        return;
        }
}
