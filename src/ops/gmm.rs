//! `gmm`: the lab's Gaussian-mixture clustering of autoencoder codes.
//!
//! Needs one `extract_codes` stage (`codes.tsv`: `participant_id label f0 …
//! fN`) and optionally the dataset (`fetch` or `synth`), whose
//! `OASIS_BIDS.tsv` adds each subject's age and MMS, as the lab's final plot
//! does. The model is linfa's `GaussianMixtureModel` set up as scikit-learn's
//! `GaussianMixture(n_components)` defaults: full covariances, k-means
//! initialisation, `tol` 1e-3, `reg_covar` 1e-6, `max_n_iter` 100, one run,
//! seeded by `seed` (the k-means++ draw is the only randomness).
//!
//! Artifact: `assignments.tsv` (`participant_id label cluster proba_0 …
//! [age MMS]`). Metrics: `mean_log_likelihood` (scikit-learn's `score`),
//! `converged`, the lab's `compute_metrics(labels, cluster index)` as `lab`,
//! the same under the best cluster → label matching as `matched` with the
//! mapping in `cluster_to_label`, `adjusted_rand_index`, and a per-cluster
//! summary. Codes of a subject-list set (the `extract_codes` metrics say
//! `"set": "test"`, say) also get the `matched` metrics under that set's name
//! and `"set"`, so that a paper table reads `test.balanced_accuracy` of the
//! AE + GMM row as it does of the CNNs'. With an `age_filter` need, `old`
//! holds the same matched metrics (the whole set's mapping) on the subjects it
//! lists, as `evaluate`'s `old`.
//!
//! linfa's EM computes responsibilities as `ln(Σ exp(·))` without the
//! log-sum-exp shift (80-dim densities of spread 1e4 underflow to 0 → NaN),
//! and `predict` panics on a NaN row. So the codes are fitted standardised
//! (one centre and one scale for all features, with `reg_covar` scaled to
//! match: the same mixture, see [`fit`]), the fit is checked for finite
//! parameters, and the log-likelihood, probabilities and assignments are
//! computed here with a shifted log-sum-exp from the fitted parameters.

use std::path::Path;

use linfa::prelude::*;
use linfa_clustering::{GaussianMixtureModel, GmmCovarType, GmmError, GmmInitMethod};
use linfa_linalg::cholesky::Cholesky;
use linfa_linalg::triangular::{SolveTriangular, UPLO};
use ndarray::{Array2, Axis};
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;
use serde::Deserialize;
use serde_json::json;

use super::cluster_metrics::{adjusted_rand_index, best_cluster_to_label};
use super::metrics::compute_metrics;
use super::{Metrics, OpCtx, OpError};
use crate::artifact::assignments::{self, Assignment, Assignments};
use crate::artifact::codes::{self, Codes as CodesFile};
use crate::artifact::dataset::Dataset;
use crate::artifact::subjects::{self, Subjects};

/// Params, defaulting to scikit-learn's `GaussianMixture` as the lab uses it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GmmParams {
    pub n_components: usize,
    pub seed: u64,
    pub tol: f64,
    pub reg_covar: f64,
    pub max_n_iter: u64,
}

impl Default for GmmParams {
    fn default() -> Self {
        GmmParams {
            n_components: 2,
            seed: 0,
            tol: 1e-3,
            reg_covar: 1e-6,
            max_n_iter: 100,
        }
    }
}

impl GmmParams {
    /// Range checks serde cannot express; run at pipeline load time too.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_COMPONENTS).contains(&self.n_components) {
            return Err(format!(
                "n_components is {}, expected 1 to {MAX_COMPONENTS} (the lab uses 2)",
                self.n_components
            ));
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return Err(format!(
                "tol is {}, expected a positive number (default 1e-3)",
                self.tol
            ));
        }
        if !(self.reg_covar.is_finite() && self.reg_covar > 0.0) {
            return Err(format!(
                "reg_covar is {}, expected a positive number (default 1e-6)",
                self.reg_covar
            ));
        }
        if self.max_n_iter == 0 {
            return Err("max_n_iter is 0, expected at least 1 (default 100)".into());
        }
        Ok(())
    }
}

/// The cluster → label search tries 2^n mappings (see `cluster_metrics`).
const MAX_COMPONENTS: usize = 16;
const CODES: &str = codes::FILE;
const ASSIGNMENTS: &str = assignments::FILE;

/// Parses and range-checks params (the registry's `check_params`).
pub fn check_params(params: &super::Params) -> Result<(), String> {
    super::parse_params::<GmmParams>(params)?.check()
}

/// The codes of one split, as `extract_codes` writes them.
#[derive(Debug, Clone)]
pub struct Codes {
    pub ids: Vec<String>,
    pub labels: Vec<i64>,
    /// One row per subject, one column per code feature.
    pub features: Array2<f64>,
}

/// A fitted mixture, evaluated on the data it was fitted on.
#[derive(Debug, Clone)]
pub struct Clustering {
    /// Most probable component of each sample (scikit-learn's `predict`).
    pub clusters: Vec<usize>,
    /// Posterior of each component, samples × components (`predict_proba`).
    pub proba: Array2<f64>,
    /// Mean per-sample log-likelihood (scikit-learn's `score`).
    pub mean_log_likelihood: f64,
    pub weights: Vec<f64>,
}

/// The op's entry point (see the module docs).
pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let params: GmmParams = ctx.params()?;
    params.check().map_err(OpError::Params)?;
    // By artifact, not op: a user's stage writing codes.tsv feeds it too.
    let codes_input = ctx.input_with_file(CODES)?;
    let codes_path = codes_input.dir.join(CODES);
    let codes = read_codes(&codes_path)?;
    let demographics = match ctx.input_by_any_op(&["fetch", "synth"]) {
        Ok(dataset) => Some(demographics_of(&Dataset::open(&dataset.dir)?, &codes.ids)?),
        Err(_) => None,
    };

    // Thread count does not change the result: linfa's parallel loops are
    // per-sample assignments, and the k-means++ draw is sequential.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(ctx.threads.max(1))
        .build()
        .map_err(|e| {
            OpError::Msg(format!(
                "stage `{}`: cannot start {} threads: {e}",
                ctx.stage, ctx.threads
            ))
        })?;
    let fitted = pool
        .install(|| fit(&codes.features, &params))
        .map_err(|e| OpError::Msg(format!("{}: {e}", codes_path.display())))?;

    write_assignments(
        &ctx.out.join(ASSIGNMENTS),
        &codes,
        &fitted,
        demographics.as_deref(),
    )?;
    let mut metrics = summarise(&codes, &fitted, &params, demographics.as_deref());
    if let Some(filter) = optional_age_filter(ctx)? {
        metrics.insert(
            "old".into(),
            old_metrics(ctx.stage, &codes, &fitted, params.n_components, filter)?,
        );
    }
    let set = crate::artifact::metrics::read_in(&codes_input.dir)?
        .and_then(|m| m.get("set").and_then(|s| s.as_str()).map(str::to_string));
    if let Some(set) = set {
        if let Some(matched) = metrics.get("matched").cloned() {
            metrics.insert(set.clone(), matched);
        }
        metrics.insert("set".into(), set.into());
    }
    Ok(metrics)
}

/// The one upstream `age_filter` stage, if `needs` has one.
fn optional_age_filter<'a>(ctx: &OpCtx<'a>) -> Result<Option<&'a super::Input>, OpError> {
    match ctx.inputs_by_op("age_filter").len() {
        0 => Ok(None),
        _ => ctx.input_by_op("age_filter").map(Some),
    }
}

/// The matched metrics on the codes of the subjects `filter` lists (the ≥ 62 subgroup),
/// under the cluster → label mapping of the whole set.
fn old_metrics(
    stage: &str,
    codes: &Codes,
    fitted: &Clustering,
    k: usize,
    filter: &super::Input,
) -> Result<serde_json::Value, OpError> {
    let kept = Subjects::read(&filter.dir.join(subjects::FILE))?;
    let keep = kept.ids();
    let mapping = best_cluster_to_label(&codes.labels, &fitted.clusters, k).unwrap_or_default();
    let (mut truth, mut predicted) = (Vec::new(), Vec::new());
    for (i, id) in codes.ids.iter().enumerate() {
        if keep.contains(id.as_str()) {
            truth.push(codes.labels.get(i).copied().unwrap_or(-1));
            let cluster = fitted.clusters.get(i).copied().unwrap_or(usize::MAX);
            predicted.push(mapping.get(cluster).copied().unwrap_or(-1));
        }
    }
    if truth.is_empty() {
        return Err(OpError::Msg(format!(
            "stage `{stage}`: none of the {} subjects listed by `{}` has codes; give the \
             age_filter stage the split the codes were extracted from",
            keep.len(),
            filter.stage
        )));
    }
    Ok(json!(compute_metrics(&truth, &predicted)))
}

fn summarise(
    codes: &Codes,
    fitted: &Clustering,
    params: &GmmParams,
    demographics: Option<&[Demographics]>,
) -> Metrics {
    let k = params.n_components;
    let raw: Vec<i64> = fitted.clusters.iter().map(|&c| c as i64).collect();
    let mapping = best_cluster_to_label(&codes.labels, &fitted.clusters, k).unwrap_or_default();
    let matched: Vec<i64> = fitted
        .clusters
        .iter()
        .map(|&c| mapping.get(c).copied().unwrap_or(-1))
        .collect();
    let per_cluster: Vec<serde_json::Value> = (0..k)
        .map(|c| {
            let members: Vec<usize> = (0..codes.ids.len())
                .filter(|&i| fitted.clusters.get(i) == Some(&c))
                .collect();
            let n_ad = members
                .iter()
                .filter(|&&i| codes.labels.get(i) == Some(&1))
                .count();
            let mut entry = json!({
                "cluster": c,
                "weight": fitted.weights.get(c),
                "n": members.len(),
                "n_ad": n_ad,
                "n_cn": members.len() - n_ad,
            });
            if let (Some(table), Some(map)) = (demographics, entry.as_object_mut()) {
                let mean = |get: fn(&Demographics) -> f64| {
                    let values: Vec<f64> = members
                        .iter()
                        .filter_map(|&i| table.get(i))
                        .map(get)
                        .filter(|v| v.is_finite())
                        .collect();
                    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
                };
                map.insert("mean_age".into(), json!(mean(|d| d.age)));
                map.insert("mean_mms".into(), json!(mean(|d| d.mms)));
            }
            entry
        })
        .collect();

    let mut metrics = Metrics::new();
    metrics.insert("n".into(), json!(codes.ids.len()));
    metrics.insert("n_features".into(), json!(codes.features.ncols()));
    metrics.insert("n_components".into(), json!(k));
    metrics.insert(
        "mean_log_likelihood".into(),
        json!(fitted.mean_log_likelihood),
    );
    // linfa returns an error instead of an unconverged model, so a result is converged.
    // It does not report the iteration count, hence no `n_iter`.
    metrics.insert("converged".into(), json!(true));
    metrics.insert("weights".into(), json!(fitted.weights));
    metrics.insert("lab".into(), json!(compute_metrics(&codes.labels, &raw)));
    metrics.insert(
        "matched".into(),
        json!(compute_metrics(&codes.labels, &matched)),
    );
    metrics.insert("cluster_to_label".into(), json!(mapping));
    metrics.insert(
        "adjusted_rand_index".into(),
        json!(adjusted_rand_index(&codes.labels, &fitted.clusters)),
    );
    metrics.insert("clusters".into(), json!(per_cluster));
    metrics
}

/// Fits the mixture and evaluates it on `features` (rows = samples).
///
/// Errors are plain sentences meant to follow the codes file's path.
pub fn fit(features: &Array2<f64>, params: &GmmParams) -> Result<Clustering, String> {
    params.check()?;
    let (n, d) = features.dim();
    let k = params.n_components;
    if n < k {
        return Err(format!(
            "{n} subjects but {k} mixture components; a Gaussian mixture needs at least as many samples as components"
        ));
    }
    if d == 0 {
        return Err("the codes have no feature columns".into());
    }
    // EM with full covariances is equivariant under x → (x - c) / s when
    // reg_covar becomes reg_covar / s² (k-means++ too: it only compares
    // squared distances), so fitting standardised codes is the same model as
    // scikit-learn's on the raw ones. It keeps linfa's unshifted exp() of the
    // log-densities in range: with 80 dims of spread 1e4 they underflow to 0.
    // It also makes linfa's absolute k-means tolerance (centroid shift 1e-4)
    // relative to the spread, as scikit-learn's KMeans tolerance is.
    let centre = features
        .mean_axis(Axis(0))
        .unwrap_or_else(|| ndarray::Array1::zeros(d));
    let centred = features - &centre;
    let spread = (centred.iter().map(|v| v * v).sum::<f64>() / (n * d) as f64).sqrt();
    let scale = if spread.is_finite() && spread > 0.0 {
        spread
    } else {
        1.0
    };
    let scaled = centred / scale;
    let dataset = DatasetBase::from(scaled.clone());
    let hyper =
        GaussianMixtureModel::params_with_rng(k, Xoshiro256Plus::seed_from_u64(params.seed))
            .covariance_type(GmmCovarType::Full)
            .init_method(GmmInitMethod::KMeans)
            .tolerance(params.tol)
            .reg_covariance(params.reg_covar / (scale * scale))
            .n_runs(1)
            .max_n_iterations(params.max_n_iter);
    // linfa has `unwrap`s on paths its checks should rule out; a panic there
    // must still fail this stage with a sentence, not take the runner down.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hyper.fit(&dataset)))
        .map_err(|_| "linfa's GaussianMixtureModel panicked while fitting (a bug in linfa-clustering 0.8); try another `seed`".to_string())?;
    let model = outcome.map_err(|e| explain(&e, params))?;

    let weights = model.weights().to_vec();
    let finite = weights.iter().all(|w| w.is_finite() && *w > 0.0)
        && model.means().iter().all(|v| v.is_finite())
        && model.covariances().iter().all(|v| v.is_finite());
    if !finite {
        return Err(format!(
            "the fitted mixture has non-finite parameters (EM overflowed on codes of this scale); \
             raise `reg_covar` (now {}) or rescale the codes",
            params.reg_covar
        ));
    }
    let log_prob = weighted_log_prob(&scaled, &model)
        .map_err(|e| format!("{e}; raise `reg_covar` (now {})", params.reg_covar))?;
    let mut proba = Array2::zeros((n, k));
    let mut clusters = Vec::with_capacity(n);
    let mut total = 0.0;
    for (i, row) in log_prob.axis_iter(Axis(0)).enumerate() {
        // log-sum-exp, shifted by the row's maximum so nothing overflows.
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        total += lse;
        let mut best = 0;
        for (c, v) in row.iter().enumerate() {
            proba[[i, c]] = (v - lse).exp();
            if *v > row[best] {
                best = c;
            }
        }
        clusters.push(best);
    }
    // Back to the raw codes' density: the Jacobian of x / scale is scale^-d.
    let mean_log_likelihood = total / n as f64 - d as f64 * scale.ln();
    if !mean_log_likelihood.is_finite() {
        return Err(format!(
            "the log-likelihood of the fitted mixture is not finite; raise `reg_covar` (now {})",
            params.reg_covar
        ));
    }
    Ok(Clustering {
        clusters,
        proba,
        mean_log_likelihood,
        weights,
    })
}

/// ln(weight_k) + ln N(x_i | mean_k, cov_k), samples × components, through
/// the Cholesky factor of each covariance (as scikit-learn does).
fn weighted_log_prob(
    x: &Array2<f64>,
    model: &GaussianMixtureModel<f64>,
) -> Result<Array2<f64>, String> {
    let (n, d) = x.dim();
    let k = model.weights().len();
    let mut out = Array2::zeros((n, k));
    let ln_2pi = (2.0 * std::f64::consts::PI).ln();
    for c in 0..k {
        let cov = model.covariances().index_axis(Axis(0), c);
        let chol = cov
            .cholesky()
            .map_err(|e| format!("covariance of component {c} is not positive definite ({e})"))?;
        let diff = (x - &model.means().row(c)).reversed_axes(); // d × n
        let solved = chol
            .solve_triangular(&diff, UPLO::Lower)
            .map_err(|e| format!("component {c}: {e}"))?;
        let half_log_det: f64 = chol.diag().iter().map(|v| v.ln()).sum();
        let ln_weight = model.weights()[c].ln();
        for (i, column) in solved.axis_iter(Axis(1)).enumerate() {
            let mahalanobis: f64 = column.iter().map(|v| v * v).sum();
            out[[i, c]] = ln_weight - 0.5 * (d as f64 * ln_2pi + mahalanobis) - half_log_det;
        }
    }
    Ok(out)
}

/// Turns linfa's error into what happened and what to change.
fn explain(error: &GmmError, params: &GmmParams) -> String {
    match error {
        GmmError::NotConverged(_) => format!(
            "the Gaussian mixture did not converge in {} EM iterations (tol {}); raise `max_n_iter` or `tol`, or try another `seed`",
            params.max_n_iter, params.tol
        ),
        GmmError::LinalgError(e) => format!(
            "a mixture component's covariance is singular ({e}): its codes are (nearly) collapsed or it holds \
             too few subjects for the code's dimension; raise `reg_covar` (now {}) or lower `n_components`",
            params.reg_covar
        ),
        GmmError::EmptyCluster(_) | GmmError::KMeansError(_) => format!(
            "a mixture component ended up empty ({error}); the codes may hold fewer than {} distinct points: lower `n_components` or try another `seed`",
            params.n_components
        ),
        GmmError::MinMaxError(_) | GmmError::LowerBoundError(_) => format!(
            "EM produced NaN responsibilities ({error}): linfa's unshifted exp() of the log-densities \
             under- or overflowed even on standardised codes, which happens when features differ in \
             spread by many orders of magnitude; standardise each feature or raise `reg_covar` (now {})",
            params.reg_covar
        ),
        other => format!("fitting the Gaussian mixture failed: {other}"),
    }
}

/// Reads `codes.tsv` ([`crate::artifact::codes`]) as an f64 matrix.
pub fn read_codes(path: &Path) -> Result<Codes, OpError> {
    let file = CodesFile::read(path)?;
    let features = Array2::from_shape_vec((file.ids.len(), file.width), file.features_f64())
        .map_err(|e| OpError::Msg(format!("{}: rows of unequal length: {e}", path.display())))?;
    Ok(Codes {
        ids: file.ids,
        labels: file.labels,
        features,
    })
}

/// Age and MMS of one subject (NaN when the table leaves it empty).
#[derive(Debug, Clone, Copy)]
pub struct Demographics {
    pub age: f64,
    pub mms: f64,
}

/// Age and MMS of each of `ids`, from the dataset's `OASIS_BIDS.tsv`.
fn demographics_of(ds: &Dataset, ids: &[String]) -> Result<Vec<Demographics>, OpError> {
    ids.iter()
        .map(|id| {
            let s = ds.find_subject(id).ok_or_else(|| {
                OpError::Msg(format!(
                    "{}: subject `{id}` of the codes is missing; the codes must come from this dataset",
                    ds.layout.bids_tsv().display()
                ))
            })?;
            Ok(Demographics {
                age: s.age,
                mms: s.mms,
            })
        })
        .collect()
}

fn write_assignments(
    path: &Path,
    codes: &Codes,
    fitted: &Clustering,
    demographics: Option<&[Demographics]>,
) -> Result<(), OpError> {
    let rows = codes
        .ids
        .iter()
        .zip(&codes.labels)
        .zip(&fitted.clusters)
        .enumerate()
        .map(|(i, ((id, label), cluster))| {
            let d = demographics.and_then(|t| t.get(i));
            Assignment {
                participant_id: id.clone(),
                label: *label,
                cluster: *cluster,
                proba: fitted.proba.row(i).to_vec(),
                age: d.map_or(f64::NAN, |d| d.age),
                mms: d.map_or(f64::NAN, |d| d.mms),
            }
        })
        .collect();
    Assignments {
        components: fitted.proba.ncols(),
        demographics: demographics.is_some(),
        rows,
    }
    .write(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Input;
    use rand_xoshiro::rand_core::RngCore;

    /// Standard normal draws (Box–Muller) from a seeded xoshiro.
    struct Normal(Xoshiro256Plus);
    impl Normal {
        fn new(seed: u64) -> Self {
            Normal(Xoshiro256Plus::seed_from_u64(seed))
        }
        fn uniform(&mut self) -> f64 {
            // 53 random bits in (0, 1]: never ln(0).
            ((self.0.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
        }
        fn sample(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    /// `per_cluster` samples around 0 (label 0) then `per_cluster` around
    /// `gap` on every axis (label 1), unit noise, rows shuffled by interleaving.
    fn blobs(per_cluster: usize, dims: usize, gap: f64, seed: u64) -> (Array2<f64>, Vec<i64>) {
        let mut normal = Normal::new(seed);
        let mut x = Array2::zeros((2 * per_cluster, dims));
        let mut labels = Vec::new();
        for i in 0..2 * per_cluster {
            let label = (i % 2) as i64;
            for j in 0..dims {
                x[[i, j]] = normal.sample() + gap * label as f64;
            }
            labels.push(label);
        }
        (x, labels)
    }

    fn ari(labels: &[i64], fitted: &Clustering) -> f64 {
        adjusted_rand_index(labels, &fitted.clusters).unwrap()
    }

    #[test]
    fn separable_blobs_in_5_dims_are_recovered() {
        let (x, labels) = blobs(20, 5, 6.0, 1);
        let fitted = fit(&x, &GmmParams::default()).unwrap();
        assert_eq!(ari(&labels, &fitted), 1.0);
        assert!(fitted.mean_log_likelihood.is_finite());
        // Five unit-variance dims: about -5/2 (1 + ln 2π) ≈ -7.09 per sample,
        // less because the fitted covariances hug the sample.
        assert!(
            (-9.0..-5.0).contains(&fitted.mean_log_likelihood),
            "{}",
            fitted.mean_log_likelihood
        );
        for row in fitted.proba.axis_iter(Axis(0)) {
            assert!((row.sum() - 1.0).abs() < 1e-9);
        }
        assert!((fitted.weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn separable_blobs_in_80_dims_with_fewer_samples_than_dims() {
        // 30 subjects per component in 80 dims: each covariance has rank 29,
        // and only reg_covar keeps it invertible, as with the lab's codes.
        let (x, labels) = blobs(30, 80, 3.0, 2);
        let fitted = fit(&x, &GmmParams::default()).unwrap();
        assert_eq!(ari(&labels, &fitted), 1.0);
        assert!(fitted.mean_log_likelihood.is_finite());
    }

    #[test]
    fn low_rank_codes_are_clustered() {
        // 60 codes of 80 dims spanning a 5-dim subspace (an autoencoder's codes
        // can be this degenerate), two groups apart along one direction.
        let mut normal = Normal::new(3);
        let basis = Array2::from_shape_fn((5, 80), |_| normal.sample());
        let mut latent = Array2::from_shape_fn((60, 5), |_| normal.sample() * 0.3);
        let labels: Vec<i64> = (0..60).map(|i| i64::from(i >= 30)).collect();
        for (i, label) in labels.iter().enumerate() {
            latent[[i, 0]] += 4.0 * *label as f64;
        }
        let x = latent.dot(&basis);
        let fitted = fit(&x, &GmmParams::default()).unwrap();
        assert_eq!(ari(&labels, &fitted), 1.0);
        assert!(fitted.mean_log_likelihood.is_finite());
    }

    #[test]
    fn same_seed_same_result() {
        let (x, _) = blobs(15, 10, 0.8, 4); // overlapping: the init matters
        let params = GmmParams {
            seed: 7,
            ..GmmParams::default()
        };
        let a = fit(&x, &params).unwrap();
        let b = fit(&x, &params).unwrap();
        assert_eq!(a.clusters, b.clusters);
        assert_eq!(
            a.mean_log_likelihood.to_bits(),
            b.mean_log_likelihood.to_bits()
        );
        assert_eq!(a.proba, b.proba);
    }

    #[test]
    fn too_few_samples_and_bad_params_are_explained() {
        let (x, _) = blobs(1, 3, 1.0, 5);
        let params = GmmParams {
            n_components: 3,
            ..GmmParams::default()
        };
        let msg = fit(&x, &params).unwrap_err();
        assert!(msg.contains("2 subjects but 3 mixture components"), "{msg}");
        let msg = GmmParams {
            reg_covar: 0.0,
            ..GmmParams::default()
        }
        .check()
        .unwrap_err();
        assert!(msg.contains("reg_covar"), "{msg}");
        let mut params = crate::ops::Params::new();
        params.insert("n_component".into(), 2.into());
        assert!(check_params(&params).is_err());
        params.clear();
        params.insert("n_components".into(), 0.into());
        assert!(check_params(&params)
            .unwrap_err()
            .contains("n_components is 0"));
    }

    #[test]
    fn collapsed_codes_fail_with_a_sentence() {
        // Every subject has the same code: no two distinct components exist.
        let x = Array2::from_elem((10, 4), 0.5);
        let msg = fit(&x, &GmmParams::default()).unwrap_err();
        assert!(
            msg.contains("n_components") || msg.contains("reg_covar"),
            "{msg}"
        );
    }

    #[test]
    fn large_spread_codes_fit_and_the_likelihood_follows_the_scale() {
        // Full-rank 80-dim codes of spread 1e4: linfa alone underflows exp()
        // of every log-density to 0 and fails on NaN responsibilities.
        let (x, labels) = blobs(100, 80, 3.0, 8);
        let big = &x * 1e4;
        let params = GmmParams::default();
        let fitted = fit(&big, &params).unwrap();
        assert_eq!(ari(&labels, &fitted), 1.0);
        // Scaling the codes by s (and reg_covar by s²) is the same mixture;
        // only the density changes, by -d ln s per sample.
        let same = GmmParams {
            reg_covar: params.reg_covar * 1e-8,
            ..params
        };
        let small = fit(&x, &same).unwrap();
        assert_eq!(small.clusters, fitted.clusters);
        let expected = small.mean_log_likelihood - 80.0 * 1e4f64.ln();
        assert!(
            (fitted.mean_log_likelihood - expected).abs() < 1e-6,
            "{} vs {expected}",
            fitted.mean_log_likelihood
        );
    }

    fn codes_tsv(x: &Array2<f64>, labels: &[i64]) -> String {
        let mut text = "participant_id\tlabel".to_string();
        for j in 0..x.ncols() {
            text += &format!("\tf{j}");
        }
        text += "\n";
        for (i, row) in x.axis_iter(Axis(0)).enumerate() {
            text += &format!("sub-{i:03}\t{}", labels[i]);
            for v in row {
                text += &format!("\t{v}");
            }
            text += "\n";
        }
        text
    }

    #[test]
    fn op_writes_assignments_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let (x, labels) = blobs(12, 5, 6.0, 6);
        let codes_dir = dir.path().join("codes");
        std::fs::create_dir_all(&codes_dir).unwrap();
        std::fs::write(codes_dir.join(CODES), codes_tsv(&x, &labels)).unwrap();
        let layout = crate::artifact::dataset::Layout::create(&dir.path().join("data")).unwrap();
        let mut bids = Vec::new();
        for i in 0..24 {
            // AD (odd rows) are 80 with MMS 20, CN 60 with 30; one MMS missing.
            let (age, mms, d) = if i % 2 == 1 {
                ("80", "20", "AD")
            } else {
                ("60", "30", "CN")
            };
            let mms = if i == 0 { "" } else { mms };
            let cells = [
                &format!("sub-{i:03}"),
                "ses-M00",
                "x",
                "F",
                "",
                age,
                "",
                d,
                "R",
                mms,
                "0",
                d,
            ];
            bids.push(cells.map(str::to_string).to_vec());
        }
        layout.write_bids(&bids).unwrap();
        for split in crate::artifact::dataset::Split::ALL {
            layout.write_split(split, &[]).unwrap();
        }

        let inputs = [
            Input {
                stage: "codes".into(),
                op: Some("extract_codes".into()),
                dir: codes_dir,
                content: None,
            },
            Input {
                stage: "data".into(),
                op: Some("synth".into()),
                dir: dir.path().join("data"),
                content: None,
            },
        ];
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let params = crate::ops::Params::new();
        let ctx = OpCtx {
            stage: "gmm",
            params: &params,
            inputs: &inputs,
            out: &out,
            threads: 2,
            scratch: None,
        };
        let metrics = run(&ctx).unwrap();

        assert_eq!(metrics["adjusted_rand_index"], 1.0);
        assert_eq!(metrics["matched"]["accuracy"], 1.0);
        assert_eq!(metrics["n"], 24);
        assert_eq!(metrics["n_features"], 5);
        let mapping = metrics["cluster_to_label"].clone();
        assert!(
            mapping == json!([0, 1]) || mapping == json!([1, 0]),
            "{mapping}"
        );
        // The lab scores the raw cluster index: perfect or all wrong.
        let lab_accuracy = metrics["lab"]["accuracy"].as_f64().unwrap();
        assert_eq!(
            lab_accuracy,
            if mapping == json!([0, 1]) { 1.0 } else { 0.0 }
        );
        let ad_cluster = if mapping == json!([0, 1]) { 1 } else { 0 };
        let ad = &metrics["clusters"][ad_cluster];
        assert_eq!(
            (ad["n"].clone(), ad["n_ad"].clone(), ad["mean_age"].clone()),
            (json!(12), json!(12), json!(80.0))
        );
        assert_eq!(metrics["clusters"][1 - ad_cluster]["mean_mms"], 30.0); // the missing one skipped

        let text = std::fs::read_to_string(out.join(ASSIGNMENTS)).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("participant_id\tlabel\tcluster\tproba_0\tproba_1\tage\tMMS")
        );
        let first: Vec<&str> = lines.next().unwrap().split('\t').collect();
        assert_eq!(
            (first[0], first[1], first[5], first[6]),
            ("sub-000", "0", "60", "")
        );
        assert_eq!(text.lines().count(), 25);
        assert!(metrics.get("set").is_none(), "lab codes: no set");

        // Codes of a subject list's set: the matched metrics again, under the set's name.
        std::fs::write(inputs[0].dir.join("metrics.json"), r#"{"set": "test"}"#).unwrap();
        let out2 = dir.path().join("out2");
        std::fs::create_dir_all(&out2).unwrap();
        let metrics = run(&OpCtx { out: &out2, ..ctx }).unwrap();
        assert_eq!(metrics["set"], "test");
        assert_eq!(metrics["test"], metrics["matched"]);

        // The ≥ 62 subgroup: the subjects an age_filter lists, under the whole set's mapping.
        let old = dir.path().join("old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(
            old.join(subjects::FILE),
            "participant_id\tsession_id\tdiagnosis\tage\nsub-001\tses-M00\tAD\t80\nsub-002\tses-M00\tCN\t70\nsub-005\tses-M00\tAD\t80\n",
        )
        .unwrap();
        let with_old = [
            inputs[0].clone(),
            Input {
                stage: "old".into(),
                op: Some("age_filter".into()),
                dir: old.clone(),
                content: None,
            },
        ];
        let out3 = dir.path().join("out3");
        std::fs::create_dir_all(&out3).unwrap();
        let metrics = run(&OpCtx {
            inputs: &with_old,
            out: &out3,
            ..ctx
        })
        .unwrap();
        assert_eq!(metrics["old"]["n"], 3);
        assert_eq!(metrics["old"]["accuracy"], 1.0);
        std::fs::write(
            old.join(subjects::FILE),
            "participant_id\tsession_id\tdiagnosis\tage\nsub-999\tses-M00\tAD\t80\n",
        )
        .unwrap();
        let e = run(&OpCtx {
            inputs: &with_old,
            out: &out3,
            ..ctx
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("none of the 1 subjects listed by `old` has codes"),
            "{e}"
        );
    }

    #[test]
    fn codes_missing_from_the_dataset_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let layout = crate::artifact::dataset::Layout::create(dir.path()).unwrap();
        let cells = [
            "sub-1", "ses-M00", "x", "F", "", "70", "", "CN", "R", "29", "0", "CN",
        ];
        layout
            .write_bids(&[cells.map(str::to_string).to_vec()])
            .unwrap();
        for split in crate::artifact::dataset::Split::ALL {
            layout.write_split(split, &[]).unwrap();
        }
        let ds = Dataset::open(dir.path()).unwrap();
        let msg = demographics_of(&ds, &["sub-1".into(), "sub-2".into()])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`sub-2`") && msg.contains("OASIS_BIDS.tsv"),
            "{msg}"
        );
    }
}
