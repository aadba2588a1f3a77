// Eight-float vectors for the CPU kernels (GCC's vector extensions, so the same source compiles to
// SSE2 pairs by default and to AVX2 in the functions built with
// `target_clones("arch=x86-64-v3", "default")`), and a vectorised e^x.
// Every helper is always inlined: vector values never cross a call, so the ABI note GCC gives for
// 32-byte vectors without AVX does not apply (hence the pragma, for the files that include this).
#pragma once

#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#pragma GCC diagnostic ignored "-Wpsabi"

namespace lethe::simd {

constexpr int kLane = 8;  // floats per vector
using f8 = float __attribute__((vector_size(kLane * sizeof(float))));
using i8 = int32_t __attribute__((vector_size(kLane * sizeof(int32_t))));

#define LETHE_INLINE inline __attribute__((always_inline))

LETHE_INLINE f8 load8(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// bf16 is the high half of an fp32: widened by a shift, narrowed with round-to-nearest-even (NaN
// to the quiet NaN 0x7fc0), as c10::BFloat16's conversions do value by value.
using u16x8 = uint16_t __attribute__((vector_size(kLane * sizeof(uint16_t))));
using u32x8 = uint32_t __attribute__((vector_size(kLane * sizeof(uint32_t))));
LETHE_INLINE f8 load8(const c10::BFloat16* p) {
  u16x8 h;
  std::memcpy(&h, p, sizeof h);
  return (f8)(__builtin_convertvector(h, u32x8) << 16);
}
LETHE_INLINE void store8(float* p, f8 v) { std::memcpy(p, &v, sizeof v); }
LETHE_INLINE void store8(c10::BFloat16* p, f8 v) {
  const u32x8 bits = (u32x8)v, rounded = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
  const u16x8 h = __builtin_convertvector(v != v ? u32x8{} + 0x7fc0 : rounded, u16x8);
  std::memcpy(p, &h, sizeof h);
}
// The first n < 8 lanes (the others 0), and their store.
template <typename T>
LETHE_INLINE f8 load_part(const T* p, int n) {
  f8 v{};
  for (int l = 0; l < n; ++l) v[l] = static_cast<float>(p[l]);
  return v;
}
template <typename T>
LETHE_INLINE void store_part(T* p, f8 v, int n) {
  for (int l = 0; l < n; ++l) p[l] = static_cast<T>(v[l]);
}

LETHE_INLINE float lane_max(f8 v) {
  float m = v[0];
  for (int l = 1; l < kLane; ++l) m = std::max(m, v[l]);
  return m;
}
LETHE_INLINE float lane_total(f8 v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }

// e^x lane by lane (Cephes' expf: x = n ln 2 + r with |r| ≤ ½ ln 2, a degree-6 polynomial in r
// times 2^n; within 1 ulp of fp32); 0 below −87.3 (where e^x is no longer a normal float) and for
// −∞, +∞ above 88.37 (where 2^n would overflow), NaN for NaN.
LETHE_INLINE f8 exp8(f8 x) {
  const i8 under = x<-87.3f, over = x> 88.37f;
  x = under ? f8{} - 87.3f : over ? f8{} + 88.37f : x;
  const f8 magic = f8{} + 12582912.0f;  // 1.5 · 2²³: adding it rounds to an integer
  const f8 t = x * 1.44269504f + magic, n = t - magic;
  const f8 r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  f8 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  for (const float c : {8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f}) p = p * r + c;
  const f8 y = p * r * r + r + 1.0f;
  const i8 bits = (i8)y + (((i8)t - (i8)magic) << 23);
  return under ? f8{} : over ? f8{} + __builtin_inff() : (f8)bits;
}

}  // namespace lethe::simd
