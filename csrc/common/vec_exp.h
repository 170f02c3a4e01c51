// exp for the fused softmax / sigmoid loops: branch-free float code that the compiler
// vectorizes (no libm call in the loop). Cephes' expf reduction and polynomial (about 1 ulp on
// the range used). Host only. GCC if-converts the selects below (and so vectorizes the caller's
// loop) only without trapping math: a file using it starts with
// `#pragma GCC optimize("no-trapping-math")` (no FP exceptions are ever enabled by torch).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace semvis {

// exp(x) for x <= 88 with about 1 ulp relative error; below ln(FLT_MIN) (-87.34) returns exactly 0
// (the callers compare against a term equal to 1, so subnormal terms do not matter), above 88
// returns exp(88) (saturates, never inf). NaN in -> NaN out.
__attribute__((always_inline)) inline float exp_sat(float x) {
  const float lo = -87.33654475f, hi = 88.0f;
  float xc = x < lo ? lo : x;  // written as comparisons so that NaN passes through both
  xc = xc > hi ? hi : xc;
  const float t = xc * 1.44269504088896341f;
  // round to nearest: t lies in [-126, 127], so t + 128.5 > 0 and truncation is floor (integer
  // arithmetic, safe under reassociating compiler flags)
  const int32_t n = static_cast<int32_t>(t + 128.5f) - 128;
  const float fn = static_cast<float>(n);
  float r = xc - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  float out = y * scale;
  out = x < lo ? 0.0f : out;
  return x != x ? x : out;
}

inline double exp_sat(double x) { return std::exp(x > 700.0 ? 700.0 : x); }  // NaN passes

}  // namespace semvis
