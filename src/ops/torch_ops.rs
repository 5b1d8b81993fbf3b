//! The table of torch ops: each op the `hcpipe-torch` worker runs is declared here once, with
//! its name and version (both in every stage key: never change them for an existing op) and
//! its params type (in [`super::torch_params`]).
//!
//! The runner and the worker both compile against this table. The runner's registry takes
//! these ops' [`OpDef`]s from it ([`TorchOp::def`]: params checked at load time with the same
//! type). The worker turns a job into a [`TorchJob`], the op with its params parsed by that
//! type, and matches on it; a new row is a new variant, so the worker does not compile until
//! it runs the new op.

use super::torch_params::{EvaluateParams, ExtractCodesParams, TrainAeParams, TrainCnnParams};
use super::{OpDef, OpKind, Params};

/// Declares the torch ops: `Variant { name, version, params: Type, summary }`, where `Type`
/// has `fn from_params(&Params) -> Result<Type, String>` (parse, then check values).
macro_rules! torch_ops {
    ($(
        $(#[$doc:meta])*
        $variant:ident {
            name: $name:literal,
            version: $version:literal,
            params: $params:ty,
            summary: $summary:literal $(,)?
        }
    )*) => {
        /// A torch op, by name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum TorchOp {
            $($(#[$doc])* $variant,)*
        }

        /// A torch op with its params parsed and checked: what the worker runs.
        #[derive(Debug, Clone)]
        pub enum TorchJob {
            $($(#[$doc])* $variant($params),)*
        }

        impl TorchOp {
            /// Every torch op, in the order `hcpipe ops` lists them.
            pub const ALL: &'static [TorchOp] = &[$(TorchOp::$variant),*];

            pub const fn name(self) -> &'static str {
                match self {
                    $(TorchOp::$variant => $name,)*
                }
            }

            /// Part of the stage key: bump when the op's output for the same inputs changes.
            pub const fn version(self) -> u32 {
                match self {
                    $(TorchOp::$variant => $version,)*
                }
            }

            /// The op's entry in the runner's registry.
            pub const fn def(self) -> OpDef {
                OpDef {
                    name: self.name(),
                    version: self.version(),
                    kind: OpKind::Torch,
                    check_params: match self {
                        $(TorchOp::$variant => |p| <$params>::from_params(p).map(|_| ()),)*
                    },
                    summary: match self {
                        $(TorchOp::$variant => $summary,)*
                    },
                }
            }

            /// This op's params, parsed and checked as the runner checked them at load time.
            pub fn job(self, params: &Params) -> Result<TorchJob, String> {
                match self {
                    $(TorchOp::$variant => <$params>::from_params(params).map(TorchJob::$variant),)*
                }
            }
        }
    };
}

torch_ops! {
    TrainCnn {
        name: "train_cnn",
        // 2: Adam as one fused kernel; initial weights drawn on the CPU on every device.
        // 3: per-epoch evaluation in batches of 4 on the CPU (was 32; faster, and the
        //    values may round differently on some CPUs).
        version: 3,
        params: TrainCnnParams,
        summary: "train the lab's CNN on one `crop` stage, or a subject list's train set of it (Adam, best epoch by training loss)",
    }
    Evaluate {
        name: "evaluate",
        // 2: metrics gain `roc_auc`.
        // 3: without `batch_size`, batches of the worker's choice (4 on the CPU, was 32:
        //    twice as fast; the values may round differently on some CPUs).
        version: 3,
        params: EvaluateParams,
        summary: "a `train_cnn` model on the validation split or a subject list's `set`: predictions and lab metrics",
    }
    TrainAe {
        name: "train_ae",
        // 2: Adam as one fused kernel; initial weights drawn on the CPU on every device.
        // 3: per-epoch evaluation one patch at a time on the CPU (was 32; faster, and
        //    the summed loss rounds differently, which may pick another best epoch).
        version: 3,
        params: TrainAeParams,
        summary: "train the lab's autoencoder on one `crop` stage, or a subject list's train set of it (Adam, summed MSE)",
    }
    ExtractCodes {
        name: "extract_codes",
        // 2: without `batch_size`, batches of the worker's choice (1 on the CPU, was 32:
        //    twice as fast; the codes round differently).
        version: 2,
        params: ExtractCodesParams,
        summary: "a `train_ae` model's 80-value codes of one split or subject-list set, for clustering",
    }
}

impl TorchOp {
    pub fn from_name(name: &str) -> Option<TorchOp> {
        TorchOp::ALL.iter().copied().find(|op| op.name() == name)
    }

    /// The names, for messages: `train_cnn`, `evaluate`, ...
    pub fn names() -> String {
        let names: Vec<_> = TorchOp::ALL.iter().map(|op| op.name()).collect();
        format!("`{}`", names.join("`, `"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names and versions are in every stage key: these are the ones keys were made with.
    #[test]
    fn names_and_versions_are_the_keys() {
        let table: Vec<_> = TorchOp::ALL
            .iter()
            .map(|op| (op.name(), op.version()))
            .collect();
        assert_eq!(
            table,
            [
                ("train_cnn", 3),
                ("evaluate", 3),
                ("train_ae", 3),
                ("extract_codes", 2)
            ]
        );
    }

    #[test]
    fn a_job_has_its_params_checked() {
        let job = TorchOp::TrainCnn.job(&Params::new()).unwrap();
        assert!(matches!(job, TorchJob::TrainCnn(p) if p.epochs == 30));
        let mut bad = Params::new();
        bad.insert("lr".into(), serde_json::json!(-1.0));
        assert!(TorchOp::TrainAe.job(&bad).unwrap_err().contains("`lr`"));
        assert_eq!(TorchOp::from_name("evaluate"), Some(TorchOp::Evaluate));
        assert_eq!(TorchOp::from_name("crop"), None);
    }
}
