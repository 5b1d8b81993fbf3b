//! The lab's classification metrics (`compute_metrics` in the seed), shared by
//! `evaluate`, `soft_vote` and `gmm`, and by the torch worker.
//!
//! Label 1 is AD (the positive class), 0 is CN. As in the lab, a sensitivity
//! or specificity whose denominator is zero is reported as 0.0, not NaN.
//!
//! [`roc_auc`] is not the lab's (it reports none); it is scikit-learn's
//! `roc_auc_score`, which papers on the lab's data (Wen et al. 2020) report.

use serde::{Deserialize, Serialize};

/// Confusion-matrix metrics, as the lab defines them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    pub accuracy: f64,
    pub sensitivity: f64,
    pub specificity: f64,
    pub balanced_accuracy: f64,
    pub n: usize,
}

/// `truth` and `predicted` hold 0/1 labels of equal length.
pub fn compute_metrics(truth: &[i64], predicted: &[i64]) -> BinaryMetrics {
    debug_assert_eq!(truth.len(), predicted.len());
    let (mut tp, mut tn, mut fp, mut fn_) = (0usize, 0usize, 0usize, 0usize);
    for (&t, &p) in truth.iter().zip(predicted) {
        match (p == 1, t == 1) {
            (true, true) => tp += 1,
            (false, false) => tn += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
        }
    }
    let ratio = |num: usize, den: usize| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let sensitivity = ratio(tp, tp + fn_);
    let specificity = ratio(tn, tn + fp);
    BinaryMetrics {
        // The lab divides by tp+tn+fp+fn unguarded; an empty set is NaN there, 0 here.
        accuracy: ratio(tp + tn, tp + tn + fp + fn_),
        sensitivity,
        specificity,
        balanced_accuracy: (sensitivity + specificity) / 2.0,
        n: truth.len(),
    }
}

/// The lab's metrics plus the ROC AUC: what `evaluate` and `soft_vote` report
/// per evaluated set, and what `aggregate` recomputes on pooled predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScoredMetrics {
    #[serde(flatten)]
    pub binary: BinaryMetrics,
    /// `None` (JSON null) where it is undefined: a set with one class only.
    pub roc_auc: Option<f64>,
}

impl ScoredMetrics {
    /// The metric named as in `metrics.json` (`balanced_accuracy`, `roc_auc`, `n`, ...);
    /// `None` for a name it does not have or an undefined AUC.
    pub fn get(&self, name: &str) -> Option<f64> {
        let b = &self.binary;
        match name {
            "accuracy" => Some(b.accuracy),
            "sensitivity" => Some(b.sensitivity),
            "specificity" => Some(b.specificity),
            "balanced_accuracy" => Some(b.balanced_accuracy),
            "n" => Some(b.n as f64),
            "roc_auc" => self.roc_auc,
            _ => None,
        }
    }

    /// The names [`ScoredMetrics::get`] knows.
    pub const NAMES: [&'static str; 6] = [
        "accuracy",
        "sensitivity",
        "specificity",
        "balanced_accuracy",
        "n",
        "roc_auc",
    ];
}

/// [`compute_metrics`] of `truth` and `predicted`, and [`roc_auc`] of `proba1` (P(AD)).
pub fn scored_metrics(truth: &[i64], predicted: &[i64], proba1: &[f64]) -> ScoredMetrics {
    ScoredMetrics {
        binary: compute_metrics(truth, predicted),
        roc_auc: roc_auc(truth, proba1),
    }
}

/// The area under the ROC curve of the scores `proba1` (P(AD)) for the 0/1
/// labels `truth`, as scikit-learn's `roc_auc_score(truth, proba1)`.
///
/// Computed as the Mann-Whitney statistic: the share of (AD, CN) pairs whose
/// AD subject scores higher, a tie counting one half, which is exactly the
/// trapezoidal area under the ROC curve. From average ranks, so O(n log n).
/// `None` when it is undefined: no AD or no CN subject (scikit-learn raises),
/// or a score that is not a number.
pub fn roc_auc(truth: &[i64], proba1: &[f64]) -> Option<f64> {
    debug_assert_eq!(truth.len(), proba1.len());
    if proba1.iter().any(|p| p.is_nan()) {
        return None;
    }
    let positives = truth.iter().filter(|&&t| t == 1).count();
    let negatives = truth.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..proba1.len()).collect();
    order.sort_by(|&i, &j| proba1[i].total_cmp(&proba1[j]));
    // Sum of the positives' average ranks (1-based), ties sharing their mean rank.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && proba1[order[end]] == proba1[order[start]] {
            end += 1;
        }
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        let in_group = order[start..end]
            .iter()
            .filter(|&&i| truth.get(i) == Some(&1))
            .count();
        rank_sum += mean_rank * in_group as f64;
        start = end;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_auc_matches_scikit_learn() {
        // Each value printed once by scikit-learn 1.9.1: roc_auc_score(truth, proba1).
        let cases: [(&[i64], &[f64], f64); 5] = [
            (
                &[1, 1, 1, 0, 0, 0, 0],
                &[0.9, 0.4, 0.4, 0.4, 0.1, 0.8, 0.35],
                0.75,
            ),
            (
                &[1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0],
                &[
                    0.61, 0.2, 0.77, 0.59, 0.05, 0.48, 0.33, 0.71, 0.93, 0.12, 0.4, 0.5,
                ],
                0.875,
            ),
            (&[0, 0, 1, 1], &[0.1, 0.2, 0.8, 0.9], 1.0),
            (&[1, 1, 0, 0], &[0.1, 0.2, 0.8, 0.9], 0.0),
            (&[1, 0, 1, 0], &[0.5, 0.5, 0.5, 0.5], 0.5),
        ];
        for (truth, proba1, want) in cases {
            let got = roc_auc(truth, proba1).unwrap();
            assert!((got - want).abs() < 1e-15, "{truth:?}: {got} != {want}");
        }
    }

    #[test]
    fn scored_metrics_serialise_flat_with_a_null_auc_when_undefined() {
        let m = scored_metrics(&[1, 0, 1], &[1, 0, 0], &[0.9, 0.2, 0.4]);
        let v = serde_json::to_value(m).unwrap();
        assert_eq!(v["roc_auc"], 1.0);
        assert_eq!(v["n"], 3);
        assert_eq!(m.get("sensitivity"), Some(0.5));
        let one_class = serde_json::to_value(scored_metrics(&[1], &[1], &[0.9])).unwrap();
        assert!(one_class["roc_auc"].is_null());
        assert!(one_class["balanced_accuracy"].is_number());
    }

    #[test]
    fn roc_auc_needs_both_classes() {
        assert_eq!(roc_auc(&[1, 1], &[0.2, 0.3]), None);
        assert_eq!(roc_auc(&[0, 0], &[0.2, 0.3]), None);
        assert_eq!(roc_auc(&[], &[]), None);
        assert_eq!(roc_auc(&[0, 1], &[0.2, f64::NAN]), None);
    }

    #[test]
    fn hand_computed_case() {
        // tp=2 tn=3 fp=1 fn=1
        let truth = [1, 1, 1, 0, 0, 0, 0];
        let pred = [1, 1, 0, 0, 0, 0, 1];
        let m = compute_metrics(&truth, &pred);
        assert_eq!(m.n, 7);
        assert!((m.accuracy - 5.0 / 7.0).abs() < 1e-12);
        assert!((m.sensitivity - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.specificity - 3.0 / 4.0).abs() < 1e-12);
        assert!((m.balanced_accuracy - (2.0 / 3.0 + 0.75) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn missing_class_gives_zero_like_the_lab() {
        let m = compute_metrics(&[0, 0], &[0, 1]);
        assert_eq!(m.sensitivity, 0.0);
        assert_eq!(m.specificity, 0.5);
        assert_eq!(m.balanced_accuracy, 0.25);
    }

    #[test]
    fn lab_validation_figures() {
        // The seed's left-HC validation: 77 subjects, 15 AD, sensitivity 0.6
        // (9 of 15), specificity 59/62 → accuracy 68/77.
        let mut truth = vec![1; 15];
        truth.extend(vec![0; 62]);
        let mut pred = vec![1; 9];
        pred.extend(vec![0; 6]);
        pred.extend(vec![0; 59]);
        pred.extend(vec![1; 3]);
        let m = compute_metrics(&truth, &pred);
        assert!((m.accuracy - 0.8831168831168831).abs() < 1e-12);
        assert!((m.specificity - 0.9516129032258065).abs() < 1e-12);
        assert!((m.balanced_accuracy - 0.7758064516129033).abs() < 1e-12);
    }
}
