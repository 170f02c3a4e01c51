// Scalar helpers usable from host and device code: 16-bit float conversions and order-preserving
// integer keys for floating-point values (the selection kernels compare integers, not floats).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SEMVIS_HD __host__ __device__ __forceinline__
#else
#define SEMVIS_HD inline
#endif

namespace semvis {

// Storage types for the 16-bit floats: raw bits, converted explicitly.
struct half_t { uint16_t bits; };
struct bfloat16_t { uint16_t bits; };

SEMVIS_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u; std::memcpy(&u, &f, 4); return u;
#endif
}
SEMVIS_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f; std::memcpy(&f, &u, 4); return f;
#endif
}
SEMVIS_HD uint64_t double_bits(double f) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(f));
#else
  uint64_t u; std::memcpy(&u, &f, 8); return u;
#endif
}
SEMVIS_HD double bits_double(uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(u));
#else
  double f; std::memcpy(&f, &u, 8); return f;
#endif
}

SEMVIS_HD float to_float(float v) { return v; }
SEMVIS_HD double to_float(double v) { return v; }
SEMVIS_HD float to_float(bfloat16_t v) { return bits_float(static_cast<uint32_t>(v.bits) << 16); }
SEMVIS_HD float to_float(half_t v) {
  const uint32_t h = v.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  if (exp == 0) {
    if (man == 0) return bits_float(sign);
    // subnormal: renormalize
    int e = -1;
    do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
    man &= 0x3ffu;
    return bits_float(sign | ((127 - 15 - e) << 23) | (man << 13));
  }
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (man << 13));  // inf / nan
  return bits_float(sign | ((exp + 127 - 15) << 23) | (man << 13));
}

template <typename T> SEMVIS_HD T from_float(float v);
template <> SEMVIS_HD float from_float<float>(float v) { return v; }
template <> SEMVIS_HD bfloat16_t from_float<bfloat16_t>(float v) {
  uint32_t u = float_bits(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16_t{static_cast<uint16_t>((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bfloat16_t{static_cast<uint16_t>(u >> 16)};
}
template <> SEMVIS_HD half_t from_float<half_t>(float f) {
  // Round to nearest even, with subnormals, overflow to inf and NaN kept.
  uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return half_t{static_cast<uint16_t>(sign | 0x7e00u)};
  if (x >= 0x477ff000u) return half_t{static_cast<uint16_t>(sign | 0x7c00u)};  // >= 65520 rounds to inf
  if (x < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (x < 0x33000000u) return half_t{static_cast<uint16_t>(sign)};  // < 2^-25 rounds to 0
    const uint32_t e = x >> 23;
    const uint32_t m = (x & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14 + (113 - e)
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return half_t{static_cast<uint16_t>(sign | r)};
  }
  uint32_t r = ((x >> 13) - (112u << 10));
  const uint32_t rem = x & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return half_t{static_cast<uint16_t>(sign | r)};
}
template <> SEMVIS_HD double from_float<double>(float v) { return v; }

// Accumulator type: float for 16/32-bit inputs, double for double.
template <typename T> struct acc_type { using type = float; };
template <> struct acc_type<double> { using type = double; };

// Order-preserving keys: a < b as numbers iff key(a) < key(b) as unsigned integers.
// -0.0 is folded onto +0.0 (they compare equal, so ties fall to the index) and every NaN maps to
// the largest key, above +inf: the ordering of torch.sort / torch.topk.
SEMVIS_HD uint32_t order_key(float v) {
  if (v != v) return 0xffffffffu;
  uint32_t u = float_bits(v);
  if (u == 0x80000000u) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
SEMVIS_HD float order_key_value(uint32_t k) {
  if (k == 0xffffffffu) return bits_float(0x7fc00000u);
  return bits_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
SEMVIS_HD uint64_t order_key(double v) {
  if (v != v) return 0xffffffffffffffffull;
  uint64_t u = double_bits(v);
  if (u == 0x8000000000000000ull) u = 0;
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}
SEMVIS_HD double order_key_value(uint64_t k) {
  if (k == 0xffffffffffffffffull) return bits_double(0x7ff8000000000000ull);
  return bits_double((k & 0x8000000000000000ull) ? (k & 0x7fffffffffffffffull) : ~k);
}

}  // namespace semvis

namespace semvis {
// Load as the accumulator type / store from it (float for 16/32-bit storage, double for double).
template <typename T> SEMVIS_HD typename acc_type<T>::type load_acc(T v) { return to_float(v); }
template <typename T> SEMVIS_HD T store_acc(typename acc_type<T>::type v) { return from_float<T>(v); }
template <> SEMVIS_HD double store_acc<double>(double v) { return v; }
}  // namespace semvis
