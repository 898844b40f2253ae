// Emulation of the f16 type of cuda_fp16.h for benches/gpu/emu (g++'s _Float16).
#pragma once

struct __half {
    _Float16 value;
};

inline float __half2float(__half v) { return float(v.value); }
inline __half __float2half(float f) { return {_Float16(f)}; }
