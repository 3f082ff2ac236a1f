// Compiler attributes of the CPU loops, shared by ops.cpp and block_ops.cpp.
#pragma once

// One clone of each row loop per ISA level (chosen at load time, so a build on one machine runs on any other).
// x86-64 with GCC >= 6 or Clang >= 14; elsewhere (or with -DPYDIFFUSION_NO_CLONES) the loops are compiled once for
// the baseline target.
#if defined(__x86_64__) && defined(__has_attribute) && !defined(PYDIFFUSION_NO_CLONES)
#if __has_attribute(target_clones)
#define PD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef PD_CLONES
#define PD_CLONES
#endif
#define PD_ALWAYS_INLINE inline __attribute__((always_inline))
