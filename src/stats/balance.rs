//! Balance tests: do two parts of a population (train and test, say) differ in
//! a variable? Each gives a statistic and a two-sided p-value, checked
//! against scipy in the tests below.
//!
//! - a number (age, MMS): Welch's unequal-variance t test ([`welch_t`]),
//!   scipy's `ttest_ind(a, b, equal_var=False)`; NaN values are skipped;
//! - a category of two values (sex): a 2×2 table ([`two_by_two`]) tested by
//!   Pearson's chi-square without continuity correction (scipy's
//!   `chi2_contingency(t, correction=False)`), or by Fisher's exact test
//!   (`fisher_exact(t)`) when any expected count is below 5, where the
//!   chi-square approximation is known to be poor (Cochran's rule).
//!
//! "Not testable" (fewer than two values on a side) is a NaN p-value, which
//! no threshold passes.

use statrs::distribution::{ChiSquared, ContinuousCDF, Discrete, Hypergeometric, StudentsT};

/// Which test gave a [`Outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    WelchT,
    Chi2,
    FisherExact,
}

impl Test {
    /// The name written in tables (`welch_t`, `chi2`, `fisher_exact`).
    pub fn as_str(self) -> &'static str {
        match self {
            Test::WelchT => "welch_t",
            Test::Chi2 => "chi2",
            Test::FisherExact => "fisher_exact",
        }
    }
}

/// A test's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub test: Test,
    /// t, chi-square, or the odds ratio (Fisher).
    pub statistic: f64,
    /// Two-sided; NaN when the data allow no test.
    pub p: f64,
}

/// Welch's unequal-variance t test (two-sided), NaN skipped: (t, p), t of
/// `mean(a) - mean(b)`. Both groups constant: p = 1 when their means are
/// equal, 0 when not.
pub fn welch_t(a: &[f64], b: &[f64]) -> (f64, f64) {
    let a: Vec<f64> = a.iter().copied().filter(|x| !x.is_nan()).collect();
    let b: Vec<f64> = b.iter().copied().filter(|x| !x.is_nan()).collect();
    if a.len() < 2 || b.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (
            n,
            m,
            v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0),
        )
    };
    let ((na, ma, va), (nb, mb, vb)) = (stats(&a), stats(&b));
    let se2 = va / na + vb / nb;
    if se2 == 0.0 {
        // Both groups constant: equal means say nothing differs, unequal ones differ surely.
        return if ma == mb {
            (0.0, 1.0)
        } else {
            (f64::INFINITY.copysign(ma - mb), 0.0)
        };
    }
    let t = (ma - mb) / se2.sqrt();
    let df = se2 * se2 / ((va / na).powi(2) / (na - 1.0) + (vb / nb).powi(2) / (nb - 1.0));
    let p = StudentsT::new(0.0, 1.0, df).map_or(f64::NAN, |d| 2.0 * d.sf(t.abs()));
    (t, p.min(1.0))
}

/// [`welch_t`] as an [`Outcome`].
pub fn welch(a: &[f64], b: &[f64]) -> Outcome {
    let (statistic, p) = welch_t(a, b);
    Outcome {
        test: Test::WelchT,
        statistic,
        p,
    }
}

/// Fisher's exact test (two-sided) on [[a, b], [c, d]]: (odds ratio, p).
pub fn fisher_exact(a: u64, b: u64, c: u64, d: u64) -> (f64, f64) {
    let (n, k, draws) = (a + b + c + d, a + c, a + b);
    let Ok(h) = Hypergeometric::new(n, k, draws) else {
        return (f64::NAN, f64::NAN);
    };
    let observed = h.pmf(a);
    let lo = draws.saturating_sub(n - k);
    let hi = draws.min(k);
    // Tables as or less likely than the observed one (relative slack as scipy).
    let p: f64 = (lo..=hi)
        .map(|x| h.pmf(x))
        .filter(|&q| q <= observed * (1.0 + 1e-7))
        .sum();
    let odds = (a as f64 * d as f64) / (b as f64 * c as f64);
    (odds, p.min(1.0))
}

/// Pearson's chi-square test of independence on a 2×2 table, without
/// continuity correction: (chi-square, p), 1 degree of freedom. NaN when a
/// row or column is empty (use [`two_by_two`], which never gets there).
pub fn chi2_2x2(t: [[u64; 2]; 2]) -> (f64, f64) {
    let Some(expected) = expected(t) else {
        return (f64::NAN, f64::NAN);
    };
    let mut x2 = 0.0;
    for (row, exp_row) in t.iter().zip(expected) {
        for (&o, e) in row.iter().zip(exp_row) {
            x2 += (o as f64 - e).powi(2) / e;
        }
    }
    let p = ChiSquared::new(1.0).map_or(f64::NAN, |d| d.sf(x2));
    (x2, p.min(1.0))
}

/// Expected counts under independence; `None` when a row or column sums to 0.
fn expected(t: [[u64; 2]; 2]) -> Option<[[f64; 2]; 2]> {
    let rows = [t[0][0] + t[0][1], t[1][0] + t[1][1]];
    let cols = [t[0][0] + t[1][0], t[0][1] + t[1][1]];
    let n = (rows[0] + rows[1]) as f64;
    if rows.contains(&0) || cols.contains(&0) {
        return None;
    }
    Some([0, 1].map(|i| [0, 1].map(|j| rows[i] as f64 * cols[j] as f64 / n)))
}

/// A 2×2 table (rows: the two parts; columns: the two categories): Pearson's
/// chi-square when every expected count is at least 5, else Fisher's exact
/// test (an empty row or column counts as expected 0, and Fisher gives p = 1:
/// one category only, or one part empty, shows no imbalance).
pub fn two_by_two(t: [[u64; 2]; 2]) -> Outcome {
    let chi2_ok = expected(t).is_some_and(|e| e.iter().flatten().all(|&x| x >= 5.0));
    if chi2_ok {
        let (statistic, p) = chi2_2x2(t);
        Outcome {
            test: Test::Chi2,
            statistic,
            p,
        }
    } else {
        let (statistic, p) = fisher_exact(t[0][0], t[0][1], t[1][0], t[1][1]);
        Outcome {
            test: Test::FisherExact,
            statistic,
            p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "got {got}, want {want}"
        );
    }

    // Reference values below: scipy 1.17.1 (python3 -m venv /tmp/v && /tmp/v/bin/pip
    // install scipy), the calls named in each comment.

    #[test]
    fn welch_matches_scipy() {
        // stats.ttest_ind(a, b, equal_var=False)
        let (t, p) = welch_t(
            &[61.0, 72.5, 80.0, 67.0, 74.0, 70.5],
            &[65.0, 77.0, 69.0, 83.5, 71.0],
        );
        close(t, -0.5425435975908093);
        close(p, 0.6019146379118747);
        let (t, p) = welch_t(
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            &[2.0, 4.0, 6.0, 8.0, 10.0, 12.0],
        );
        close(t, -2.3763541031440183);
        close(p, 0.04928433820673053);
        // NaN skipped; too few values: not testable; constant groups.
        let (t2, p2) = welch_t(
            &[1.0, f64::NAN, 2.0, 3.0, 4.0, 5.0],
            &[2.0, 4.0, 6.0, 8.0, 10.0, 12.0],
        );
        assert_eq!((t, p), (t2, p2));
        assert!(welch_t(&[1.0], &[1.0, 2.0]).1.is_nan());
        assert_eq!(welch_t(&[3.0, 3.0], &[3.0, 3.0]), (0.0, 1.0));
        assert_eq!(welch_t(&[3.0, 3.0], &[4.0, 4.0]).1, 0.0);
    }

    #[test]
    fn chi2_matches_scipy() {
        // stats.chi2_contingency(t, correction=False): (statistic, pvalue)
        for (t, x2, p) in [
            ([[12, 8], [9, 11]], 0.9022556390977443, 0.34217761061304286),
            (
                [[30, 20], [10, 15]],
                2.6785714285714284,
                0.10170693003109312,
            ),
            ([[5, 5], [5, 5]], 0.0, 1.0),
        ] {
            let o = two_by_two(t);
            assert_eq!(o.test, Test::Chi2, "{t:?}");
            close(o.statistic, x2);
            close(o.p, p);
        }
    }

    #[test]
    fn small_counts_fall_back_to_fisher_as_scipy() {
        // stats.fisher_exact(t): (odds ratio, pvalue)
        for (t, odds, p) in [
            ([[3, 1], [1, 3]], 9.0, 0.48571428571428565),
            ([[8, 2], [1, 5]], 20.0, 0.034965034965034975),
            ([[6, 0], [2, 1]], f64::INFINITY, 0.3333333333333333),
        ] {
            let o = two_by_two(t);
            assert_eq!(o.test, Test::FisherExact, "{t:?}");
            assert!(o.statistic == odds || (o.statistic - odds).abs() < 1e-9);
            close(o.p, p);
        }
        // One category only: nothing can differ.
        let o = two_by_two([[7, 0], [3, 0]]);
        assert_eq!((o.test, o.p), (Test::FisherExact, 1.0));
    }
}
