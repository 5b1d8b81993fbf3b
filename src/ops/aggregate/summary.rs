//! One cell's numbers: mean, sample SD, range and the 95 % t-interval of the mean over a
//! row's members, as numpy and scipy compute them (`x.mean()`, `x.std(ddof=1)`,
//! `scipy.stats.t.interval(0.95, n - 1, loc=mean, scale=sd / sqrt(n))`).

use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::artifact::table::{Cell, Interval, MemberValue};

/// The cell of `members` (each with its value; none NaN, at least one).
pub fn summarise(members: Vec<MemberValue>) -> Cell {
    let values: Vec<f64> = members.iter().map(|m| m.value).collect();
    let n = values.len();
    let nf = n as f64;
    let mean = values.iter().sum::<f64>() / nf;
    // Two passes, as numpy: the deviations from the mean, not sum(x^2) - n mean^2, which
    // cancels badly when the values are close (accuracies of folds are).
    let sd = (n > 1).then(|| {
        let ss: f64 = values.iter().map(|x| (x - mean) * (x - mean)).sum();
        (ss / (nf - 1.0)).sqrt()
    });
    let ci95 = sd.and_then(|sd| {
        let t = StudentsT::new(0.0, 1.0, nf - 1.0).ok()?.inverse_cdf(0.975);
        let half = t * sd / nf.sqrt();
        Some(Interval {
            lo: mean - half,
            hi: mean + half,
        })
    });
    Cell {
        n,
        mean,
        sd,
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ci95,
        members,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(value: f64) -> MemberValue {
        MemberValue {
            member: "m".into(),
            axes: Default::default(),
            value,
        }
    }

    #[test]
    fn matches_numpy_and_scipy() {
        // numpy 2.4.6: x.mean() 0.7875000000000001, x.std(ddof=1) 0.0894427190999916;
        // scipy 1.17.1: t.ppf(0.975, 5) = 2.5705818356363146.
        let x = [0.8125, 0.75, 0.875, 0.6875, 0.9, 0.7];
        let c = summarise(x.iter().map(|&v| member(v)).collect());
        assert_eq!(c.n, 6);
        assert!((c.mean - 0.7875000000000001).abs() < 1e-15);
        assert!((c.sd.unwrap() - 0.0894427190999916).abs() < 1e-15);
        assert_eq!((c.min, c.max), (0.6875, 0.9));
        let half = 2.5705818356363146 * 0.0894427190999916 / 6f64.sqrt();
        let ci = c.ci95.unwrap();
        assert!((ci.lo - (0.7875 - half)).abs() < 1e-9, "{ci:?}");
        assert!((ci.hi - (0.7875 + half)).abs() < 1e-9, "{ci:?}");
    }

    #[test]
    fn t_quantiles_match_scipy() {
        // scipy.stats.t.ppf(0.975, df)
        for (df, want) in [
            (1.0, 12.706204736174694),
            (2.0, 4.302652729749462),
            (4.0, 2.7764451051977934),
            (14.0, 2.144786687917804),
            (29.0, 2.045229642132703),
        ] {
            let got = StudentsT::new(0.0, 1.0, df).unwrap().inverse_cdf(0.975);
            assert!((got - want).abs() < 1e-9 * want, "df {df}: {got} vs {want}");
        }
    }

    #[test]
    fn one_member_has_no_spread() {
        let c = summarise(vec![member(0.5)]);
        assert_eq!((c.n, c.mean, c.sd, c.ci95), (1, 0.5, None, None));
        assert_eq!((c.min, c.max), (0.5, 0.5));
    }
}
