//! Range checks for training configurations, run before any model is loaded: an impossible value
//! (`--lr nan`, `--batch-size 0`, `--group-size 1`) is refused at once with the field named,
//! instead of training on it.

use anyhow::bail;

/// `value` must be a finite number ≥ `min`.
pub(crate) fn finite_at_least(field: &str, value: f64, min: f64) -> anyhow::Result<()> {
    if !value.is_finite() || value < min {
        bail!("`{field}` is {value}: it must be a finite number ≥ {min}");
    }
    Ok(())
}

/// `value` must lie in `0..=1`.
pub(crate) fn fraction(field: &str, value: f64) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&value) {
        bail!("`{field}` is {value}: it must be within 0..=1");
    }
    Ok(())
}

/// `value` must be at least `min`.
pub(crate) fn count_at_least(
    field: &str,
    value: usize,
    min: usize,
    why: &str,
) -> anyhow::Result<()> {
    if value < min {
        bail!("`{field}` is {value}: it must be at least {min} ({why})");
    }
    Ok(())
}
