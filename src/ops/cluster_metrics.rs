//! Scores of a clustering against known labels, used by `gmm`.
//!
//! - [`adjusted_rand_index`]: Hubert & Arabie's ARI from the contingency
//!   table, as scikit-learn's `adjusted_rand_score` computes it (1.0 for
//!   identical partitions up to renaming, about 0.0 for chance).
//! - [`best_cluster_to_label`]: the cluster → label mapping that gets the
//!   most subjects right, since a cluster's index carries no meaning (the lab
//!   scores the raw index, which only works when cluster 1 happens to be AD).
//!
//! Written here rather than taken from a crate: linfa has no ARI, and the
//! formula is a dozen lines over a `BTreeMap` contingency table.

use std::collections::BTreeMap;

use super::metrics::compute_metrics;

/// Pairs of `n` things: n(n-1)/2, in f64 (exact up to n ≈ 9e7).
fn pairs(n: usize) -> f64 {
    let n = n as f64;
    n * (n - 1.0) / 2.0
}

/// Adjusted Rand index of two labellings of the same samples.
///
/// Returns `None` when the lengths differ. As in scikit-learn, two
/// labellings that both put everything in one cluster, or both put every
/// sample in its own cluster (including 0 or 1 samples), score 1.0.
pub fn adjusted_rand_index<A: Ord, B: Ord>(truth: &[A], predicted: &[B]) -> Option<f64> {
    if truth.len() != predicted.len() {
        return None;
    }
    let mut table: BTreeMap<(&A, &B), usize> = BTreeMap::new();
    let mut rows: BTreeMap<&A, usize> = BTreeMap::new();
    let mut cols: BTreeMap<&B, usize> = BTreeMap::new();
    for (a, b) in truth.iter().zip(predicted) {
        *table.entry((a, b)).or_default() += 1;
        *rows.entry(a).or_default() += 1;
        *cols.entry(b).or_default() += 1;
    }
    let index: f64 = table.values().map(|&n| pairs(n)).sum();
    let sum_rows: f64 = rows.values().map(|&n| pairs(n)).sum();
    let sum_cols: f64 = cols.values().map(|&n| pairs(n)).sum();
    let expected = if truth.len() < 2 {
        0.0
    } else {
        sum_rows * sum_cols / pairs(truth.len())
    };
    let max_index = (sum_rows + sum_cols) / 2.0;
    let denominator = max_index - expected;
    // Zero only when both labellings are "one cluster" or "all singletons"
    // (the cases scikit-learn special-cases to a perfect 1.0).
    if denominator == 0.0 {
        return Some(1.0);
    }
    Some((index - expected) / denominator)
}

/// The mapping `m` (cluster `c` → label `m[c]`, labels 0/1) that maximises
/// the number of subjects with `m[cluster] == label`; ties go to the higher
/// balanced accuracy, then to the identity-like mapping (for two clusters,
/// `[0, 1]` before `[1, 0]`).
///
/// With two or more clusters both labels are used, so the mapping stays a
/// matching for the usual two clusters; one cluster maps to the majority
/// label. `n_clusters` must be at most 20 (2^n mappings are tried) and every
/// entry of `clusters` below it; returns `None` otherwise.
pub fn best_cluster_to_label(
    labels: &[i64],
    clusters: &[usize],
    n_clusters: usize,
) -> Option<Vec<i64>> {
    if n_clusters == 0 || n_clusters > 20 || clusters.iter().any(|&c| c >= n_clusters) {
        return None;
    }
    let full = 1usize << n_clusters;
    let mut best: Option<(usize, f64, Vec<i64>)> = None;
    // Descending masks put cluster c → bit c, so the identity [0, 1] (mask 0b10)
    // comes before the swap [1, 0] (0b01).
    for mask in (0..full).rev() {
        let surjective = mask != 0 && mask != full - 1;
        if n_clusters >= 2 && !surjective {
            continue;
        }
        let mapping: Vec<i64> = (0..n_clusters).map(|c| ((mask >> c) & 1) as i64).collect();
        let predicted: Vec<i64> = clusters.iter().map(|&c| ((mask >> c) & 1) as i64).collect();
        let correct = labels
            .iter()
            .zip(&predicted)
            .filter(|(l, p)| l == p)
            .count();
        let balanced = compute_metrics(labels, &predicted).balanced_accuracy;
        let better = match &best {
            None => true,
            Some((c, b, _)) => correct > *c || (correct == *c && balanced > *b),
        };
        if better {
            best = Some((correct, balanced, mapping));
        }
    }
    best.map(|(_, _, mapping)| mapping)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ari(a: &[i64], b: &[i64]) -> f64 {
        adjusted_rand_index(a, b).unwrap()
    }

    #[test]
    fn ari_ignores_cluster_names() {
        assert_eq!(ari(&[0, 0, 1, 1], &[1, 1, 0, 0]), 1.0);
        assert_eq!(ari(&[0, 0, 1, 1], &[0, 0, 1, 1]), 1.0);
    }

    #[test]
    fn ari_matches_scikit_learn_examples() {
        // scikit-learn user guide, "Rand index": 0.24242424...
        // Hand check: sum C(n_ij,2) = 2, rows 3+3 = 6, cols 1+1+1 = 3, C(6,2) = 15,
        // expected 6*3/15 = 1.2, max 4.5 → (2 - 1.2) / (4.5 - 1.2) = 8/33.
        let value = ari(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 2, 2]);
        assert!((value - 8.0 / 33.0).abs() < 1e-15, "{value}");
        assert!((value - 0.242_424_242_424_242_4).abs() < 1e-12);
        // adjusted_rand_score docstring: [0, 0, 1, 2] vs [0, 0, 1, 1] → 0.57...
        let value = ari(&[0, 0, 1, 2], &[0, 0, 1, 1]);
        assert!((value - 4.0 / 7.0).abs() < 1e-15, "{value}");
        // ... and [0, 0, 1, 1] vs [0, 1, 0, 1] → -0.5 (worse than chance).
        assert!((ari(&[0, 0, 1, 1], &[0, 1, 0, 1]) + 0.5).abs() < 1e-15);
        // One cluster against a real split scores 0.
        assert_eq!(ari(&[0, 0, 1, 1], &[0, 0, 0, 0]), 0.0);
    }

    #[test]
    fn ari_degenerate_cases_follow_scikit_learn() {
        assert_eq!(ari(&[], &[]), 1.0);
        assert_eq!(ari(&[3], &[7]), 1.0);
        assert_eq!(ari(&[1, 1, 1], &[0, 0, 0]), 1.0);
        assert_eq!(ari(&[0, 1, 2], &[5, 6, 7]), 1.0);
        assert_eq!(adjusted_rand_index(&[0, 1], &[0]), None);
    }

    #[test]
    fn mapping_prefers_most_subjects_right() {
        // cluster 0 is mostly AD (1), cluster 1 mostly CN (0) → swap.
        let labels = [1, 1, 1, 0, 0, 0, 0];
        let clusters = [0, 0, 1, 1, 1, 1, 0];
        assert_eq!(
            best_cluster_to_label(&labels, &clusters, 2),
            Some(vec![1, 0])
        );
        assert_eq!(
            best_cluster_to_label(&labels, &[1, 1, 0, 0, 0, 0, 1], 2),
            Some(vec![0, 1])
        );
        // Both clusters mostly CN: a matching still uses both labels.
        let labels = [0, 0, 0, 1, 0, 0, 0, 1];
        let clusters = [0, 0, 0, 0, 1, 1, 1, 1];
        assert_eq!(
            best_cluster_to_label(&labels, &clusters, 2),
            Some(vec![0, 1])
        );
        // Three clusters: the two AD-heavy ones both map to AD.
        let labels = [1, 1, 0, 0, 1, 1];
        let clusters = [0, 0, 1, 1, 2, 2];
        assert_eq!(
            best_cluster_to_label(&labels, &clusters, 3),
            Some(vec![1, 0, 1])
        );
        assert_eq!(
            best_cluster_to_label(&[0, 0, 1], &[0, 0, 0], 1),
            Some(vec![0])
        );
        assert_eq!(best_cluster_to_label(&[0], &[2], 2), None);
    }
}
