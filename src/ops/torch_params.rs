//! Params of the ops the `hcpipe-torch` worker runs (`train_cnn`, `evaluate`,
//! `train_ae`, `extract_codes`).
//!
//! They live in the runner lib, not in the worker, so the runner checks a
//! pipeline's params at load time without linking libtorch; the worker
//! deserialises the same structs from its job file. Defaults are the lab's
//! (seed notebook, sections "Train & Test" and "Train Autoencoder").

use serde::{Deserialize, Serialize};

use super::{parse_params, Params};

/// Where the tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when the worker sees a GPU, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// Fails when no GPU is visible rather than silently using the CPU.
    Cuda,
}

/// Which split of a `crop` artifact an op reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
}

impl Split {
    /// The file stem inside a `crop` artifact (`train.safetensors`, `train.tsv`).
    pub fn stem(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
        }
    }
}

/// Which file of a subject list (a `split`/`kfold` member: `train.tsv`,
/// `validation.tsv`, `test.tsv`) a stage evaluates; only with a subject-list need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectSet {
    Train,
    Validation,
    Test,
}

impl SubjectSet {
    /// The set's name: the list's file stem and the key of the stage's metrics.
    pub fn name(self) -> &'static str {
        match self {
            SubjectSet::Train => "train",
            SubjectSet::Validation => "validation",
            SubjectSet::Test => "test",
        }
    }
}

fn default_cnn_lr() -> f64 {
    1e-4
}
fn default_ae_lr() -> f64 {
    1e-2
}
fn default_epochs() -> usize {
    30
}
fn default_train_batch() -> usize {
    4
}

/// The params of a training op: the same fields and checks, each op with its own default `lr`
/// (`default_lr` names the function that gives it).
macro_rules! training_params {
    ($(#[$doc:meta])* $name:ident, default_lr: $default_lr:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            #[serde(default = $default_lr)]
            pub lr: f64,
            #[serde(default = "default_epochs")]
            pub epochs: usize,
            #[serde(default = "default_train_batch")]
            pub batch_size: usize,
            /// Seeds weight init, dropout, shuffling and shifts.
            #[serde(default)]
            pub seed: u64,
            /// Random shift in voxels per axis during training; defaults to the
            /// margin the `crop` stage stored (its `shift`), and may not exceed it.
            #[serde(default)]
            pub shift: Option<usize>,
            #[serde(default)]
            pub device: DeviceChoice,
        }

        impl $name {
            /// Parse and check the values serde cannot (positive lr, non-zero sizes).
            pub fn from_params(p: &Params) -> Result<Self, String> {
                let t: Self = parse_params(p)?;
                check_training(t.lr, t.epochs, t.batch_size)?;
                Ok(t)
            }
        }
    };
}

training_params!(
    /// `train_cnn`: the lab's CustomNetwork, Adam, summed cross-entropy.
    TrainCnnParams,
    default_lr: "default_cnn_lr"
);

training_params!(
    /// `train_ae`: the lab's AutoEncoder, Adam, summed MSE.
    TrainAeParams,
    default_lr: "default_ae_lr"
);

/// `evaluate`: a trained CNN on the validation split (and the old subjects),
/// or on set `set` of a subject-list need.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// Only speed depends on it (evaluation mode: no batch statistics), up
    /// to rounding. Absent: the worker's fastest for the device (see
    /// `eval_batch` in the torch worker: 4 on the CPU, 256 on a GPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[serde(default)]
    pub device: DeviceChoice,
    /// With a subject-list need: the set to evaluate (default `validation`).
    /// Absent keeps the keys of pipelines written before subject lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<SubjectSet>,
}

/// `extract_codes`: the autoencoder's 80-value codes of one split of a lab
/// crop (`split`, default `train`), or of one set of a subject-list need
/// (`set`, default `train`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractCodesParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<SubjectSet>,
    /// As `evaluate`'s: absent, the worker's fastest for the device (1 on
    /// the CPU, 256 on a GPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[serde(default)]
    pub device: DeviceChoice,
}

fn check_training(lr: f64, epochs: usize, batch_size: usize) -> Result<(), String> {
    if !(lr.is_finite() && lr > 0.0) {
        return Err(format!("`lr` must be a positive number, got {lr}"));
    }
    if epochs == 0 {
        return Err("`epochs` must be at least 1".to_string());
    }
    check_batch(batch_size)
}

fn check_batch(batch_size: usize) -> Result<(), String> {
    if batch_size == 0 {
        return Err("`batch_size` must be at least 1".to_string());
    }
    Ok(())
}

impl EvaluateParams {
    pub fn from_params(p: &Params) -> Result<Self, String> {
        let t: Self = parse_params(p)?;
        if let Some(b) = t.batch_size {
            check_batch(b)?;
        }
        Ok(t)
    }
}

impl ExtractCodesParams {
    pub fn from_params(p: &Params) -> Result<Self, String> {
        let t: Self = parse_params(p)?;
        if let Some(b) = t.batch_size {
            check_batch(b)?;
        }
        if let (Some(split), Some(set)) = (t.split, t.set) {
            return Err(format!(
                "`split: {}` and `set: {}` both given; `split` picks a split of a lab crop, `set` \
                 a file of a subject-list need: keep the one that matches this stage's needs",
                split.stem(),
                set.name()
            ));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: serde_json::Value) -> Params {
        match json {
            serde_json::Value::Object(m) => m,
            _ => Params::new(),
        }
    }

    #[test]
    fn defaults_are_the_labs() {
        let t = TrainCnnParams::from_params(&Params::new()).unwrap();
        assert_eq!((t.lr, t.epochs, t.batch_size, t.shift), (1e-4, 30, 4, None));
        let a = TrainAeParams::from_params(&Params::new()).unwrap();
        assert_eq!((a.lr, a.epochs, a.batch_size), (1e-2, 30, 4));
        let c = ExtractCodesParams::from_params(&Params::new()).unwrap();
        assert_eq!((c.split, c.set), (None, None));
        assert_eq!(c.device, DeviceChoice::Auto);
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        let e = TrainCnnParams::from_params(&params(serde_json::json!({"learning_rate": 1})));
        assert!(e.unwrap_err().contains("unknown field `learning_rate`"));
        let e = TrainCnnParams::from_params(&params(serde_json::json!({"lr": -1.0})));
        assert!(e.unwrap_err().contains("`lr`"));
        let e = TrainAeParams::from_params(&params(serde_json::json!({"batch_size": 0})));
        assert!(e.unwrap_err().contains("`batch_size`"));
        let e = EvaluateParams::from_params(&params(serde_json::json!({"device": "gpu"})));
        assert!(e.unwrap_err().contains("unknown variant `gpu`"));
        let e = ExtractCodesParams::from_params(&params(serde_json::json!({"split": "test"})));
        assert!(e.is_err());
        let e = EvaluateParams::from_params(&params(serde_json::json!({"set": "holdout"})));
        assert!(e.unwrap_err().contains("`train`, `validation`, `test`"));
        let e = ExtractCodesParams::from_params(&params(serde_json::json!({"set": "test"})));
        assert_eq!(e.unwrap().set, Some(SubjectSet::Test));
        let e = ExtractCodesParams::from_params(&params(
            serde_json::json!({"set": "test", "split": "train"}),
        ));
        assert!(e.unwrap_err().contains("both given"));
    }
}
