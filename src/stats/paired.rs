//! Paired tests of "did B change the result of A?": the Wilcoxon signed-rank test and the
//! paired t-test, on the differences `b - a` of matched pairs (the same fold and seed run
//! before and after a change).
//!
//! Both follow scipy (1.17) with its defaults, so a p-value here is the one a reviewer gets
//! from `scipy.stats.wilcoxon(b, a)` and `scipy.stats.ttest_rel(b, a)`:
//! - Wilcoxon: zero differences are dropped (`zero_method="wilcox"`), ties get average ranks,
//!   two-sided, no continuity correction (`correction=False`). With `method="auto"`, when at
//!   most 50 pairs are given and no difference is zero or tied, the p-value is exact (the null
//!   distribution of the rank sum over all 2^n sign flips); with zeros or ties and at most 13
//!   pairs, scipy runs a permutation test over all 2^n sign flips, which is the same exact
//!   enumeration over the average ranks; otherwise the normal approximation with the tie
//!   correction `sum(t^3 - t) / 48` in the variance (zeros left out of it).
//! - paired t: `t = mean(d) / (sd(d) / sqrt(n))` with the sample SD, `n - 1` degrees of
//!   freedom, two-sided.
//!
//! Differences are compared exactly (as floats): `0.1 - 0.2` and `0.2 - 0.3` are not a tie,
//! as they are not in scipy.

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// How the Wilcoxon p-value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WilcoxonMethod {
    /// Over all 2^n sign flips (scipy's `exact`, or its permutation test for small n with ties).
    Exact,
    /// The normal approximation with tie correction.
    Normal,
}

/// A Wilcoxon signed-rank test's outcome.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Wilcoxon {
    /// `min(R+, R-)`, scipy's two-sided statistic.
    pub statistic: f64,
    pub p: f64,
    /// Pairs whose difference is not zero (the ones ranked).
    pub n_nonzero: usize,
    pub method: WilcoxonMethod,
}

/// A paired t-test's outcome.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairedT {
    pub t: f64,
    pub p: f64,
    pub df: usize,
}

/// scipy's `method="auto"`: above this many pairs the normal approximation is used.
const EXACT_MAX: usize = 50;
/// scipy's `method="auto"` with zeros or ties: up to this many pairs, all 2^n sign flips.
const PERMUTATION_MAX: usize = 13;

/// `b[i] - a[i]` for each pair.
pub fn differences(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| y - x).collect()
}

/// The two-sided Wilcoxon signed-rank test of the differences `d` (scipy's `wilcoxon(d)`).
/// `None` when it is undefined: no pair, every difference zero, or a difference not finite.
pub fn wilcoxon(d: &[f64]) -> Option<Wilcoxon> {
    if d.is_empty() || d.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let n_zero = d.iter().filter(|&&x| x == 0.0).count();
    let nonzero: Vec<f64> = d.iter().copied().filter(|&x| x != 0.0).collect();
    let count = nonzero.len();
    if count == 0 {
        return None;
    }
    // Ranks of |d| among the non-zero differences, doubled so that average ranks of ties
    // (which end in .5) stay integers and the exact distribution can be counted exactly.
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by(|&i, &j| nonzero[i].abs().total_cmp(&nonzero[j].abs()));
    let mut rank2 = vec![0u64; count];
    let mut tie_term = 0.0; // sum over tie groups of t^3 - t
    let mut has_ties = false;
    let mut start = 0;
    while start < count {
        let mut end = start + 1;
        while end < count && nonzero[order[end]].abs() == nonzero[order[start]].abs() {
            end += 1;
        }
        // positions start+1 ..= end (1-based): average rank (start + 1 + end) / 2
        let doubled = (start + 1 + end) as u64;
        for &i in &order[start..end] {
            rank2[i] = doubled;
        }
        let t = (end - start) as f64;
        if end - start > 1 {
            has_ties = true;
            tie_term += t * t * t - t;
        }
        start = end;
    }
    let r_plus2: u64 = (0..count)
        .filter(|&i| nonzero[i] > 0.0)
        .map(|i| rank2[i])
        .sum();
    let total2: u64 = rank2.iter().sum();
    let r_plus = r_plus2 as f64 / 2.0;
    let r_minus = (total2 - r_plus2) as f64 / 2.0;
    let statistic = r_plus.min(r_minus);

    let exact = d.len() <= EXACT_MAX && !(has_ties || n_zero > 0)
        || d.len() <= PERMUTATION_MAX && (has_ties || n_zero > 0);
    let (p, method) = if exact {
        (exact_p(&rank2, r_plus2), WilcoxonMethod::Exact)
    } else {
        let n = count as f64;
        let mean = n * (n + 1.0) / 4.0;
        let var = (n * (n + 1.0) * (2.0 * n + 1.0) - tie_term / 2.0) / 24.0;
        let z = (r_plus - mean) / var.sqrt();
        (two_sided_normal(z), WilcoxonMethod::Normal)
    };
    Some(Wilcoxon {
        statistic,
        p,
        n_nonzero: count,
        method,
    })
}

/// `2 min(P(T >= r), P(T <= r))`, capped at 1, where T is the (doubled) sum of a random
/// subset of `rank2`, each rank in with probability 1/2.
fn exact_p(rank2: &[u64], r_plus2: u64) -> f64 {
    let max: u64 = rank2.iter().sum();
    // ways[s]: subsets whose doubled rank sum is s; at most 2^50, which a u64 holds.
    let mut ways = vec![0u64; max as usize + 1];
    ways[0] = 1;
    let mut reach = 0usize;
    for &r in rank2 {
        let r = r as usize;
        for s in (0..=reach).rev() {
            let w = ways[s];
            if w != 0 {
                ways[s + r] += w;
            }
        }
        reach += r;
    }
    let total = 2f64.powi(rank2.len() as i32);
    let at_most: u64 = ways[..=r_plus2 as usize].iter().sum();
    let at_least: u64 = ways[r_plus2 as usize..].iter().sum();
    (2.0 * (at_most.min(at_least) as f64) / total).min(1.0)
}

fn two_sided_normal(z: f64) -> f64 {
    // Normal::standard() cannot fail; sf(|z|) keeps precision in the tail.
    let normal = Normal::standard();
    (2.0 * normal.sf(z.abs())).min(1.0)
}

/// The two-sided paired t-test of the differences `d` (scipy's `ttest_1samp(d, 0)`, which is
/// `ttest_rel(b, a)`). `None` when it is undefined: fewer than two pairs, a difference not
/// finite, or every difference zero. Differences all equal but not zero give `t = ±inf`, p 0.
pub fn paired_t(d: &[f64]) -> Option<PairedT> {
    let n = d.len();
    if n < 2 || d.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let nf = n as f64;
    let mean = d.iter().sum::<f64>() / nf;
    let var = d.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (nf - 1.0);
    let se = (var / nf).sqrt();
    if se == 0.0 {
        if mean == 0.0 {
            return None;
        }
        return Some(PairedT {
            t: f64::INFINITY.copysign(mean),
            p: 0.0,
            df: n - 1,
        });
    }
    let t = mean / se;
    let dist = StudentsT::new(0.0, 1.0, nf - 1.0).ok()?;
    Some(PairedT {
        t,
        p: (2.0 * dist.sf(t.abs())).min(1.0),
        df: n - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exact p-value is a ratio of integer counts and matches scipy's to the last bits; a
    /// normal or t p-value goes through statrs' `erfc` and incomplete beta, which agree with
    /// scipy's (Cephes) to about 4e-11 relative (checked against mpmath: scipy's is the
    /// closer one), far below what a p-value is read to.
    fn p_tol(w: &Wilcoxon) -> f64 {
        match w.method {
            WilcoxonMethod::Exact => 1e-14,
            WilcoxonMethod::Normal => 1e-9,
        }
    }

    fn close(got: f64, want: f64, tol: f64) {
        assert!(
            (got - want).abs() <= tol * want.abs().max(1e-300),
            "got {got:e}, want {want:e}"
        );
    }

    /// (name, a, b, scipy wilcoxon(b, a) statistic and p, scipy ttest_rel(b, a) t and p).
    /// Printed once by scipy 1.17.1 (numpy 2.4.6):
    /// `w = stats.wilcoxon(b, a); t = stats.ttest_rel(b, a)`.
    type Case = (
        &'static str,
        &'static [f64],
        &'static [f64],
        f64,
        f64,
        f64,
        f64,
    );
    const PAIRS: &[Case] = &[
        (
            // no ties, no zeros, n = 8: scipy's exact distribution
            "exact_no_ties",
            &[0.81, 0.77, 0.9, 0.65, 0.72, 0.88, 0.7, 0.69],
            &[0.79, 0.8, 0.84, 0.6, 0.74, 0.81, 0.61, 0.68],
            6.5,
            0.1171875,
            -2.0441637751503796,
            0.08021841438493918,
        ),
        (
            // one zero difference, n = 6: scipy's permutation test over all 2^6 flips
            "zero_small_permutation",
            &[0.8, 0.75, 0.7, 0.9, 0.6, 0.85],
            &[0.7, 0.65, 0.6, 0.95, 0.5, 0.85],
            1.0,
            0.125,
            -2.1500329089188304,
            0.08424151962939277,
        ),
        (
            // a zero and ties, n = 15: the normal approximation
            "ties_n15_normal",
            &[
                0.8, 0.75, 0.7, 0.9, 0.6, 0.85, 0.8, 0.7, 0.71, 0.66, 0.9, 0.77, 0.73, 0.74, 0.61,
            ],
            &[
                0.7, 0.65, 0.6, 0.95, 0.5, 0.85, 0.7, 0.65, 0.7, 0.6, 0.8, 0.72, 0.75, 0.7, 0.6,
            ],
            8.5,
            0.005587545321857883,
            -3.8294652980897674,
            0.0018405965129447825,
        ),
    ];

    /// (name, d, scipy wilcoxon(d) statistic and p, scipy ttest_1samp(d, 0) t and p), from the
    /// same scipy; dyadic values, so the ties are exact ties.
    type DiffCase = (&'static str, &'static [f64], f64, f64, f64, f64);
    const DIFFS: &[DiffCase] = &[
        (
            "ties_and_zero_n6",
            &[0.25, 0.25, 0.25, -0.25, 0.0, 0.5],
            2.5,
            0.3125,
            1.5811388300841895,
            0.17468781426411942,
        ),
        (
            "ties_n7",
            &[0.25, 0.25, 0.5, -0.25, 0.75, 0.5, 1.0],
            2.0,
            0.0625,
            2.8284271247461903,
            0.030019745287544395,
        ),
        (
            // three zeros (left out of the tie correction) and ties, n = 20
            "ties_zeros_n20",
            &[
                0.0, 0.0, 0.0, 0.25, -0.25, 0.5, 0.5, 0.5, -0.75, 1.0, 1.0, 1.25, -1.5, 1.5, 1.5,
                2.0, 2.0, -2.25, 2.5, 0.25,
            ],
            37.0,
            0.06099490001044452,
            1.906925178491185,
            0.07176634374412187,
        ),
        (
            "exact_n12",
            &[
                1.5, -0.5, 2.5, 3.5, -4.5, 5.5, 6.5, 7.5, -8.5, 9.5, 10.5, 11.5,
            ],
            15.0,
            0.06396484375,
            2.137575909583276,
            0.055839998724168484,
        ),
    ];

    #[test]
    fn paired_samples_match_scipy() {
        for &(name, a, b, w_stat, w_p, t_stat, t_p) in PAIRS {
            let d = differences(a, b);
            let w = wilcoxon(&d).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(w.statistic, w_stat, "{name}");
            close(w.p, w_p, p_tol(&w));
            let t = paired_t(&d).unwrap();
            close(t.t, t_stat, 1e-12);
            close(t.p, t_p, 1e-9);
            assert_eq!(t.df, a.len() - 1);
        }
    }

    #[test]
    fn differences_match_scipy() {
        for &(name, d, w_stat, w_p, t_stat, t_p) in DIFFS {
            let w = wilcoxon(d).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(w.statistic, w_stat, "{name}");
            close(w.p, w_p, p_tol(&w));
            let t = paired_t(d).unwrap();
            close(t.t, t_stat, 1e-12);
            close(t.p, t_p, 1e-9);
        }
    }

    #[test]
    fn the_method_is_scipys_auto_choice() {
        let method = |d: &[f64]| wilcoxon(d).unwrap().method;
        let by_name = |name: &str| {
            let (_, a, b, ..) = PAIRS.iter().find(|c| c.0 == name).unwrap();
            differences(a, b)
        };
        assert_eq!(method(&by_name("exact_no_ties")), WilcoxonMethod::Exact);
        // a zero with 6 pairs: scipy's permutation test, an exact enumeration
        assert_eq!(
            method(&by_name("zero_small_permutation")),
            WilcoxonMethod::Exact
        );
        assert_eq!(method(&by_name("ties_n15_normal")), WilcoxonMethod::Normal);
        for (name, d, ..) in DIFFS {
            let want = if *name == "ties_zeros_n20" {
                WilcoxonMethod::Normal
            } else {
                WilcoxonMethod::Exact
            };
            assert_eq!(method(d), want, "{name}");
        }
    }

    #[test]
    fn large_samples_use_the_normal_approximation() {
        // 60 distinct differences ((i * 37) % 101 - 40) / 7, one of them zero; scipy:
        // wilcoxon 583.0, p 0.02263320893600752; ttest_1samp t 2.507788484430631,
        // p 0.014920044731630023.
        let d: Vec<f64> = (0..60)
            .map(|i| (((i * 37) % 101) as f64 - 40.0) / 7.0)
            .collect();
        let w = wilcoxon(&d).unwrap();
        assert_eq!(w.method, WilcoxonMethod::Normal);
        assert_eq!(w.statistic, 583.0);
        assert_eq!(w.n_nonzero, 59);
        close(w.p, 0.02263320893600752, p_tol(&w));
        let t = paired_t(&d).unwrap();
        close(t.t, 2.507788484430631, 1e-12);
        close(t.p, 0.014920044731630023, 1e-9);
    }

    #[test]
    fn exact_up_to_fifty_pairs_without_ties() {
        let d: Vec<f64> = (1..=50)
            .map(|i| if i % 3 == 0 { -(i as f64) } else { i as f64 })
            .collect();
        assert_eq!(wilcoxon(&d).unwrap().method, WilcoxonMethod::Exact);
        let d: Vec<f64> = (1..=51).map(|i| i as f64).collect();
        assert_eq!(wilcoxon(&d).unwrap().method, WilcoxonMethod::Normal);
    }

    #[test]
    fn undefined_cases_are_none_not_nan() {
        assert!(wilcoxon(&[]).is_none());
        assert!(wilcoxon(&[0.0, 0.0]).is_none());
        assert!(wilcoxon(&[1.0, f64::NAN]).is_none());
        assert!(paired_t(&[0.5]).is_none());
        assert!(paired_t(&[0.0, 0.0, 0.0]).is_none());
        // scipy: wilcoxon([0.1, 0.1, 0.1]) -> statistic 0, p 0.25 (exact, ties over 3 pairs).
        let w = wilcoxon(&[0.1, 0.1, 0.1]).unwrap();
        assert_eq!((w.statistic, w.p), (0.0, 0.25));
        let t = paired_t(&[0.25, 0.25, 0.25]).unwrap();
        assert_eq!((t.t, t.p), (f64::INFINITY, 0.0));
    }
}
