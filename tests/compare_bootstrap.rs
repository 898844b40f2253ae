//! The bootstrap intervals: reproducible for a seed, different for another, sensible bounds.

use distill::compare::bootstrap::{bootstrap_mean, paired_difference};

fn table(seeds: usize, problems: usize, salt: usize) -> Vec<Vec<f64>> {
    (0..seeds)
        .map(|s| {
            (0..problems)
                .map(|p| f64::from(u8::from((p * 7 + s * 3 + salt) % 5 < 2)))
                .collect()
        })
        .collect()
}

#[test]
fn the_interval_is_reproducible_for_a_seed_and_changes_with_it() {
    let data = table(1, 40, 0);
    let a = bootstrap_mean(&data, 500, 11).unwrap();
    let b = bootstrap_mean(&data, 500, 11).unwrap();
    let c = bootstrap_mean(&data, 500, 12).unwrap();
    assert_eq!(a, b);
    assert_ne!((a.low, a.high), (c.low, c.high));
    assert_eq!(a.mean, c.mean);
    // 16 of 40 problems are correct.
    assert!((a.mean - 0.4).abs() < 1e-12);
    assert!(a.low < a.mean && a.mean < a.high, "{a:?}");
    assert!(a.low >= 0.0 && a.high <= 1.0);
}

#[test]
fn constant_data_gives_a_point_interval() {
    let ones = vec![vec![1.0; 12]; 3];
    let i = bootstrap_mean(&ones, 200, 5).unwrap();
    assert_eq!((i.low, i.mean, i.high), (1.0, 1.0, 1.0));
}

#[test]
fn several_eval_seeds_are_resampled_too() {
    // Seed 0 gets every problem right, seed 1 none: resampling seeds must spread the interval.
    let data = vec![vec![1.0; 30], vec![0.0; 30]];
    let i = bootstrap_mean(&data, 1000, 3).unwrap();
    assert_eq!(i.mean, 0.5);
    assert_eq!((i.low, i.high), (0.0, 1.0));
}

#[test]
fn the_paired_difference_of_a_run_with_itself_is_zero() {
    let data = table(2, 25, 1);
    let d = paired_difference(&data, &data, 300, 9).unwrap();
    assert_eq!(d.mean, 0.0);
    assert!(!d.excludes_zero());
    let better = vec![vec![1.0; 25]; 2];
    let d = paired_difference(&better, &data, 300, 9).unwrap();
    assert!(d.excludes_zero() && d.low > 0.0, "{d:?}");
    assert!(paired_difference(&better, &table(1, 24, 0), 300, 9).is_none());
}

#[test]
fn ragged_or_empty_tables_are_refused_not_indexed() {
    let ragged = vec![vec![1.0; 5], vec![0.0; 4]];
    assert!(bootstrap_mean(&ragged, 10, 0).is_none());
    assert!(bootstrap_mean(&[], 10, 0).is_none());
    assert!(paired_difference(&ragged, &ragged, 10, 0).is_none());
}
