//! The lab's classification metrics (`compute_metrics` in the seed), shared by
//! `evaluate`, `soft_vote` and `gmm`, and by the torch worker.
//!
//! Label 1 is AD (the positive class), 0 is CN. As in the lab, a sensitivity
//! or specificity whose denominator is zero is reported as 0.0, not NaN.

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
    let ratio = |num: usize, den: usize| if den == 0 { 0.0 } else { num as f64 / den as f64 };
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

#[cfg(test)]
mod tests {
    use super::*;

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
