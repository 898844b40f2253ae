//! A vectorisable `exp` for f32 slices. libm's `expf` is a scalar call per element, and the
//! softmax-style loops of attention and of the selective log-softmax evaluate hundreds of millions
//! of them per training step; this version compiles to SIMD code (AVX-512 or AVX2/FMA, whichever
//! the CPU has, picked at run time).
//!
//! Method (Cephes `expf`): `x = n·ln2 + r` with `|r| ≤ ln2/2`, `exp(r)` by a degree-7 polynomial,
//! `2ⁿ` built in the exponent bits. Inputs below -87 give exactly 0 (so masked `-inf` scores
//! vanish), inputs above 88 saturate near `f32::MAX`, NaN stays NaN.

use super::cpu::SimdLevel;

/// `values[i] = exp(values[i])`, on the widest vectors the CPU has.
pub(crate) fn exp_in_place(values: &mut [f32]) {
    exp_in_place_on(SimdLevel::widest(), values);
}

/// [`exp_in_place`] on a given level, which the CPU must support.
fn exp_in_place_on(level: SimdLevel, values: &mut [f32]) {
    match level {
        // SAFETY (both): the caller picked a level from `SimdLevel::available`.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { exp_in_place_avx512(values) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { exp_in_place_avx2(values) },
        _ => exp_in_place_portable(values),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_in_place_avx512(values: &mut [f32]) {
    for v in values {
        *v = exp(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_in_place_avx2(values: &mut [f32]) {
    for v in values {
        *v = exp(*v);
    }
}

fn exp_in_place_portable(values: &mut [f32]) {
    for v in values {
        *v = exp(*v);
    }
}

/// Rounds to the nearest integer by adding and removing 1.5·2²³ (no libm call, so it vectorises).
const ROUNDING: f32 = 12_582_912.0;

#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split into a part exact in f32 and the rest, so `x - n·ln2` loses no precision.
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let clamped = x.clamp(-87.0, 88.0);
    let shifted = clamped * LOG2_E + ROUNDING;
    let n = shifted - ROUNDING;
    let r = clamped - n * LN2_HIGH - n * LN2_LOW;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // The low bits of `shifted` hold n (as an integer offset from ROUNDING's bits).
    let n_bits = shifted.to_bits().wrapping_sub(ROUNDING.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127).wrapping_shl(23));
    let y = e * scale;
    if x < -87.0 {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level the CPU has, on one long slice (so the vector loop runs, not only its
    /// scalar tail), is within 2 ulp of libm from -87 to 88.
    #[test]
    fn agrees_with_libm_within_two_ulp_across_the_range() {
        let inputs: Vec<f32> = (0..)
            .map(|i| -87.0 + 0.001_37 * i as f32)
            .take_while(|&x| x < 88.0)
            .collect();
        for level in SimdLevel::available() {
            let mut got = inputs.clone();
            exp_in_place_on(level, &mut got);
            let (worst, at) = inputs
                .iter()
                .zip(&got)
                .map(|(x, y)| (y.to_bits().abs_diff(x.exp().to_bits()), *x))
                .max_by_key(|&(ulp, _)| ulp)
                .unwrap();
            assert!(worst <= 2, "{level:?}: worst error {worst} ulp at {at}");
        }
    }

    #[test]
    fn masked_scores_vanish_and_nan_propagates() {
        for level in SimdLevel::available() {
            // Twice over, so the specials sit in a vector as well as in the scalar tail.
            let specials = [f32::NEG_INFINITY, -100.0, 0.0, f32::NAN];
            let mut values: Vec<f32> = specials.iter().cycle().take(36).copied().collect();
            exp_in_place_on(level, &mut values);
            for chunk in values.chunks(4) {
                assert_eq!(&chunk[..3], &[0.0, 0.0, 1.0], "{level:?}");
                assert!(chunk[3].is_nan(), "{level:?}");
            }
        }
    }
}
