//! The summary statistics and number formatting every benchmark report
//! uses.

/// The median of the finite values (the mean of the middle two for an even
/// count); NaN if there are none.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// `value` with `decimals` decimals, or `n/a` if it is not finite.
pub(crate) fn show(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "n/a".to_string()
    }
}
