/* Which x86-64 level (https://gitlab.com/x86-psABIs/x86-64-ABI, "micro-architecture levels")
 * this CPU runs, asked of the CPU itself (CPUID) and of the operating system (XGETBV: whether
 * it saves the AVX and AVX-512 registers on a context switch; without that, the instructions
 * fault even where the CPU has them). Returns 1 (baseline), 2, 3 or 4; 0 when not x86-64. */
#ifndef FASTLOSS_CPU_H
#define FASTLOSS_CPU_H

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>

static unsigned long long fl_xgetbv0(void) {
    unsigned int lo, hi;
    __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

#define FL_BIT(reg, n) (((reg) >> (n)) & 1u)

static int fl_cpu_level(void) {
    unsigned int a, b, c, d, ext_c = 0, b7 = 0, top;
    unsigned long long xcr0 = 0;
    int v2, v3, v4;
    top = __get_cpuid_max(0, 0);
    if (top < 1 || !__get_cpuid(1, &a, &b, &c, &d))
        return 1;
    if (__get_cpuid_max(0x80000000u, 0) >= 0x80000001u) {
        unsigned int ea, eb, ed;
        __get_cpuid(0x80000001u, &ea, &eb, &ext_c, &ed);
    }
    if (top >= 7) {
        unsigned int a7, c7, d7;
        __cpuid_count(7, 0, a7, b7, c7, d7);
    }
    if (FL_BIT(c, 27))   /* OSXSAVE: the OS uses XSAVE, XGETBV may be asked */
        xcr0 = fl_xgetbv0();
    /* v2: CMPXCHG16B, LAHF-SAHF, POPCNT, SSE3, SSE4.1, SSE4.2, SSSE3 */
    v2 = FL_BIT(c, 13) && FL_BIT(ext_c, 0) && FL_BIT(c, 23) && FL_BIT(c, 0) && FL_BIT(c, 19) && FL_BIT(c, 20)
         && FL_BIT(c, 9);
    /* v3: AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, OSXSAVE; the OS saves XMM and YMM */
    v3 = v2 && FL_BIT(c, 28) && FL_BIT(b7, 5) && FL_BIT(b7, 3) && FL_BIT(b7, 8) && FL_BIT(c, 29) && FL_BIT(c, 12)
         && FL_BIT(ext_c, 5) && FL_BIT(c, 22) && FL_BIT(c, 27) && (xcr0 & 0x6) == 0x6;
    /* v4: AVX512F, AVX512BW, AVX512CD, AVX512DQ, AVX512VL; the OS saves opmask and ZMM too */
    v4 = v3 && FL_BIT(b7, 16) && FL_BIT(b7, 30) && FL_BIT(b7, 28) && FL_BIT(b7, 17) && FL_BIT(b7, 31)
         && (xcr0 & 0xe6) == 0xe6;
    return v4 ? 4 : v3 ? 3 : v2 ? 2 : 1;
}
#else
static int fl_cpu_level(void) { return 0; }
#endif
#endif
