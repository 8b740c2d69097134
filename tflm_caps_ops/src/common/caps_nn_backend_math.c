/*
 * The exact fast primitives of caps_nn_backend_math.h that are too large
 * to inline.  Compiled only into builds with an optimized backend (the
 * portable kernels use caps_nn_fixedpoint.h alone).
 */
#include "caps_nn_backend_math.h"

/* floor((hi * 2^32 + lo) / d) for d != 0 and hi < d (quotient fits 32
 * bits): Knuth's algorithm D with two 16-bit quotient digits, each from
 * one 32-bit hardware division and at most two corrections. */
static inline uint32_t caps_bm_divlu(uint32_t hi, uint32_t lo, uint32_t d)
{
    const int32_t s = caps_bm_clz32(d);
    d <<= s;
    const uint32_t dh = d >> 16;
    const uint32_t dl = d & 0xFFFFu;
    const uint32_t n32 = s == 0 ? hi : (hi << s) | (lo >> (32 - s));
    const uint32_t n10 = lo << s;
    const uint32_t n1 = n10 >> 16;
    const uint32_t n0 = n10 & 0xFFFFu;

    uint32_t q1 = n32 / dh;
    uint32_t rh = n32 - q1 * dh;
    while (q1 > 0xFFFFu || q1 * dl > ((rh << 16) | n1)) {
        --q1;
        rh += dh;
        if (rh > 0xFFFFu) {
            break;
        }
    }
    const uint32_t n21 = (n32 << 16) + n1 - q1 * d; /* mod 2^32, exact */
    uint32_t q0 = n21 / dh;
    rh = n21 - q0 * dh;
    while (q0 > 0xFFFFu || q0 * dl > ((rh << 16) | n0)) {
        --q0;
        rh += dh;
        if (rh > 0xFFFFu) {
            break;
        }
    }
    return (q1 << 16) | q0;
}

/* round(sqrt(k) * 16) for k = 0..255 (estimate table of caps_bm_isqrt32). */
static const uint16_t caps_bm_sqrt_table[256] = {
    0, 16, 23, 28, 32, 36, 39, 42, 45, 48, 51, 53, 55, 58, 60, 62,
    64, 66, 68, 70, 72, 73, 75, 77, 78, 80, 82, 83, 85, 86, 88, 89,
    91, 92, 93, 95, 96, 97, 99, 100, 101, 102, 104, 105, 106, 107, 109, 110,
    111, 112, 113, 114, 115, 116, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127,
    128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 139, 140, 141, 142,
    143, 144, 145, 146, 147, 148, 148, 149, 150, 151, 152, 153, 153, 154, 155, 156,
    157, 158, 158, 159, 160, 161, 162, 162, 163, 164, 165, 166, 166, 167, 168, 169,
    169, 170, 171, 172, 172, 173, 174, 175, 175, 176, 177, 177, 178, 179, 180, 180,
    181, 182, 182, 183, 184, 185, 185, 186, 187, 187, 188, 189, 189, 190, 191, 191,
    192, 193, 193, 194, 195, 195, 196, 197, 197, 198, 199, 199, 200, 200, 201, 202,
    202, 203, 204, 204, 205, 206, 206, 207, 207, 208, 209, 209, 210, 210, 211, 212,
    212, 213, 213, 214, 215, 215, 216, 216, 217, 218, 218, 219, 219, 220, 221, 221,
    222, 222, 223, 223, 224, 225, 225, 226, 226, 227, 227, 228, 229, 229, 230, 230,
    231, 231, 232, 232, 233, 234, 234, 235, 235, 236, 236, 237, 237, 238, 238, 239,
    239, 240, 241, 241, 242, 242, 243, 243, 244, 244, 245, 245, 246, 246, 247, 247,
    248, 248, 249, 249, 250, 250, 251, 251, 252, 252, 253, 253, 254, 254, 255, 255,
};

/* floor(sqrt(k) * 2^16) for k = 0..255 (norms of tiny capsules). */
static const uint32_t caps_bm_norm_small[256] = {
    0, 65536, 92681, 113511, 131072, 146542, 160529, 173391,
    185363, 196608, 207243, 217358, 227023, 236293, 245213, 253819,
    262144, 270211, 278045, 285664, 293085, 300323, 307391, 314299,
    321059, 327680, 334169, 340535, 346783, 352922, 358955, 364889,
    370727, 376475, 382137, 387716, 393216, 398639, 403991, 409272,
    414486, 419635, 424721, 429748, 434716, 439628, 444486, 449292,
    454046, 458752, 463409, 468020, 472586, 477109, 481589, 486027,
    490426, 494785, 499107, 503391, 507639, 511852, 516030, 520175,
    524288, 528368, 532416, 536435, 540423, 544382, 548313, 552216,
    556091, 559939, 563761, 567558, 571329, 575076, 578798, 582496,
    586171, 589824, 593453, 597061, 600647, 604212, 607755, 611279,
    614782, 618265, 621729, 625173, 628599, 632006, 635395, 638765,
    642119, 645454, 648773, 652074, 655360, 658628, 661881, 665117,
    668338, 671544, 674734, 677909, 681070, 684215, 687347, 690464,
    693567, 696657, 699733, 702795, 705844, 708880, 711903, 714913,
    717910, 720896, 723868, 726829, 729778, 732714, 735639, 738553,
    741455, 744345, 747225, 750093, 752951, 755798, 758634, 761459,
    764274, 767079, 769873, 772658, 775432, 778196, 780951, 783696,
    786432, 789157, 791874, 794581, 797279, 799968, 802648, 805319,
    807982, 810635, 813280, 815916, 818544, 821163, 823774, 826377,
    828972, 831558, 834137, 836707, 839270, 841825, 844372, 846911,
    849443, 851968, 854484, 856994, 859496, 861991, 864479, 866959,
    869433, 871899, 874359, 876811, 879257, 881696, 884128, 886554,
    888973, 891385, 893791, 896191, 898584, 900971, 903351, 905725,
    908093, 910455, 912810, 915160, 917504, 919841, 922173, 924499,
    926819, 929133, 931441, 933744, 936041, 938332, 940618, 942898,
    945173, 947442, 949706, 951965, 954218, 956466, 958709, 960946,
    963178, 965405, 967627, 969844, 972055, 974262, 976464, 978661,
    980853, 983040, 985222, 987399, 989571, 991739, 993902, 996060,
    998214, 1000363, 1002508, 1004647, 1006783, 1008913, 1011040, 1013161,
    1015279, 1017392, 1019500, 1021605, 1023705, 1025800, 1027891, 1029979,
    1032061, 1034140, 1036215, 1038285, 1040351, 1042413, 1044471, 1046525,
};

/* floor(sqrt(x)) for x < 2^30: table estimate, one Newton step, exact fix. */
uint32_t caps_bm_isqrt32(uint32_t x)
{
    if (x < 256u) {
        uint32_t a = (caps_bm_sqrt_table[x] + 8u) >> 4;
        while (a * a > x) {
            --a;
        }
        return a;
    }
    /* even shift that brings the top set bit to position 6 or 7 */
    const int32_t sh = (31 - caps_bm_clz32(x) - 6) & ~1;
    uint32_t a = ((uint32_t)caps_bm_sqrt_table[x >> sh] << (sh >> 1)) >> 4;
    a = (a + x / a) >> 1;
    while (a * a > x) {
        --a;
    }
    while ((a + 1) * (a + 1) <= x) {
        ++a;
    }
    return a;
}

/* caps_nn_norm_q16: floor(sqrt(sq) * 2^16) for sq < 2^30. */
uint32_t caps_bm_norm_q16(uint32_t sq)
{
    if (sq < 256u) {
        return caps_bm_norm_small[sq];
    }
    const uint32_t a = caps_bm_isqrt32(sq);
    const uint32_t rem = sq - a * a; /* <= 2a <= 65534 */
    /* underestimate of sqrt(sq) 2^16, off by at most 2^16 / (2a + 1) */
    const uint32_t x0 = (a << 16) + (rem << 16) / (2u * a + 1u);
    /* one Newton step (from below it lands at or above the root) */
    uint32_t x = (uint32_t)(((uint64_t)x0 + caps_bm_divlu(sq, 0, x0)) >> 1);
    const uint64_t n = (uint64_t)sq << 32;
    while ((uint64_t)x * x > n) {
        --x;
    }
    while ((uint64_t)(x + 1) * (x + 1) <= n) {
        ++x;
    }
    return x;
}

/* caps_nn_squash_gain with the fast division and norm. */
uint32_t caps_bm_squash_gain(uint32_t sq, int32_t sq_multiplier, int32_t sq_exponent)
{
    if (sq == 0 || sq_multiplier <= 0) {
        return 0;
    }
    const uint64_t den = caps_nn_squash_den_q30(sq, sq_multiplier, sq_exponent);
    /* round(2^60 / den), den in [2^30, 2^62 + 2^30]: one 64/32 division;
     * for den >= 2^32 divide by its normalized top word (n shifted alike):
     * the estimate is the quotient or one too large */
    const uint64_t n = ((uint64_t)1 << 60) + (den >> 1);
    uint32_t q;
    const uint32_t dh = (uint32_t)(den >> 32);
    if (dh == 0) {
        q = caps_bm_divlu((uint32_t)(n >> 32), (uint32_t)n, (uint32_t)den);
    } else {
        const int32_t s = caps_bm_clz32(dh);
        const uint32_t top = (uint32_t)((den << s) >> 32);
        const uint64_t nn = n >> (32 - s);
        q = caps_bm_divlu((uint32_t)(nn >> 32), (uint32_t)nn, top);
        if (q != 0 && (uint64_t)q * den > n) {
            --q;
        }
    }
    const uint64_t f = ((uint64_t)1 << 30) - q;
    const uint32_t r = caps_bm_norm_q16(sq);
    const uint64_t num = f * ((uint64_t)1 << 17) + (r >> 1); /* < 2^48: high word < r */
    return caps_bm_divlu((uint32_t)(num >> 32), (uint32_t)num, r);
}

/* caps_nn_efficient_squash_gain with the fast norm, exp2 and division:
 * r >= 2^16 for sq >= 1 and f 2^17 + r/2 < 2^48, so the high word of the
 * dividend is below r. */
uint32_t caps_bm_efficient_squash_gain(uint32_t sq, int32_t exp_multiplier, int32_t exp_shift)
{
    if (sq == 0) {
        return 0;
    }
    const uint32_t r = caps_bm_norm_q16(sq);
    const int32_t w = caps_nn_requantize((int32_t)r, exp_multiplier, exp_shift);
    const uint64_t f = ((uint64_t)1 << 30) - caps_bm_exp2_neg_q30(w);
    const uint64_t num = f * ((uint64_t)1 << 17) + (r >> 1);
    return caps_bm_divlu((uint32_t)(num >> 32), (uint32_t)num, r);
}

/* floor(sqrt(sq) 2^8) for sq < 2^38: below 2^30 from the Q16 norm
 * (floor(floor(x 2^16) / 2^8) = floor(x 2^8)); above, n = sq 2^16 < 2^54
 * from a 32-bit estimate of its top bits (relative error < 2^-13), one
 * Newton step with the 64/32 division (error then below 1) and an exact
 * correction. */
static uint32_t caps_bm_norm_q8_wide(uint64_t sq)
{
    if (sq < ((uint64_t)1 << 30)) {
        return caps_bm_norm_q16((uint32_t)sq) >> 8;
    }
    const uint64_t n = sq << 16;
    int32_t k = 0; /* n >> 2k in [2^28, 2^30) */
    while ((n >> (2 * k)) >= ((uint64_t)1 << 30)) {
        ++k;
    }
    uint32_t a = (caps_bm_isqrt32((uint32_t)(n >> (2 * k))) + 1u) << k; /* >= sqrt(n) */
    /* n / a < 2^32 since a >= sqrt(n) >= 2^23 and n < 2^54 */
    a = (uint32_t)(((uint64_t)a + caps_bm_divlu((uint32_t)(n >> 32), (uint32_t)n, a)) >> 1);
    while ((uint64_t)a * a > n) {
        --a;
    }
    while ((uint64_t)(a + 1) * (a + 1) <= n) {
        ++a;
    }
    return a;
}

int32_t caps_bm_efficient_squash_wide_gain(uint64_t sq, int32_t exp_multiplier,
                                           int32_t exp_shift)
{
    const uint32_t r = caps_bm_norm_q8_wide(sq);
    if (r == 0) {
        return 0;
    }
    const int32_t w = caps_nn_requantize((int32_t)r, exp_multiplier, exp_shift);
    const uint64_t f = ((uint64_t)1 << 30) - caps_bm_exp2_neg_q30(w);
    /* f 2^9 + r/2 < 2^40 and r >= 2^8: the quotient fits 32 bits */
    const uint64_t num = f * ((uint64_t)1 << 9) + (r >> 1);
    const uint32_t g = caps_bm_divlu((uint32_t)(num >> 32), (uint32_t)num, r);
    return g > (uint32_t)INT32_MAX ? INT32_MAX : (int32_t)g;
}

/* The exponent of entry k is requantize(k, beta) for k in [0, 255]: one
 * rounding multiply-high where the split of caps_bm_requant is exact. */
void caps_bm_exp_table(const caps_nn_requant *beta, int32_t start, int32_t stop,
                       uint32_t *table)
{
    const caps_bm_requant q = caps_bm_requant_init(beta->multiplier, beta->shift, 255);
    for (int32_t k = start; k < stop; ++k) {
        const int32_t w = q.fast ? caps_bm_requantize(k, &q)
                                 : caps_nn_requantize(k, beta->multiplier, beta->shift);
        table[k] = caps_bm_exp2_neg_q30(w);
    }
}
