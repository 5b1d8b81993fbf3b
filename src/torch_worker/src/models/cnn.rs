//! The lab's `CustomNetwork`: AD vs CN from one 30×40×30 hippocampus patch.
//!
//! Three blocks Conv3d(k3, p1) → BatchNorm3d → LeakyReLU → PadMaxPool3d(2, 2)
//! with 8, 16 and 32 filters (30×40×30 → 15×20×15 → 8×10×8 → 4×5×4), then
//! Dropout(0.5) and Linear(32·4·5·4 → 2). The lab reports a validation
//! balanced accuracy of about 0.78 (left HC) after 30 epochs at lr 1e-4.
//!
//! Parameter names are the PyTorch module's (`convolutions.0.weight`,
//! `convolutions.1.running_mean`, …, `linear.1.weight`), so checkpoints load
//! in Python with `CustomNetwork().load_state_dict(...)`.

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use super::layers::{batch_norm3d, conv3d, linear, pad_max_pool3d, pooled_shape};
use crate::rng::{self, JobGenerator};

/// Filters of the three convolution blocks.
const FILTERS: [i64; 3] = [8, 16, 32];
/// The spatial size the linear layer expects after three poolings.
pub const CODE_SHAPE: [i64; 3] = [4, 5, 4];

/// One Conv3d → BatchNorm3d → LeakyReLU → PadMaxPool3d block.
#[derive(Debug)]
struct ConvBlock {
    conv: nn::Conv3D,
    bn: nn::BatchNorm,
}

#[derive(Debug)]
pub struct CustomNetwork {
    blocks: Vec<ConvBlock>,
    fc: nn::Linear,
    /// Where training-mode dropout draws its masks on the CPU (the job's
    /// own generator, `rng`); libtorch's default generator when unset.
    noise: Option<JobGenerator>,
}

impl CustomNetwork {
    /// Module paths of the BatchNorm layers (for `num_batches_tracked`).
    pub const BATCH_NORMS: [&'static str; 3] =
        ["convolutions.1", "convolutions.5", "convolutions.9"];

    pub fn new(vs: &nn::Path) -> CustomNetwork {
        let convs = vs / "convolutions";
        let mut blocks = Vec::new();
        let mut channels = 1;
        for (b, &filters) in FILTERS.iter().enumerate() {
            // Sequential indices: conv 4b, bn 4b+1 (LeakyReLU 4b+2 and pool 4b+3 hold no weights).
            let base = 4 * b;
            blocks.push(ConvBlock {
                conv: conv3d(&convs / base, channels, filters, 3, 1),
                bn: batch_norm3d(&convs / (base + 1), filters),
            });
            channels = filters;
        }
        let features = channels * CODE_SHAPE.iter().product::<i64>();
        CustomNetwork {
            blocks,
            fc: linear(vs / "linear" / 1, features, 2),
            noise: None,
        }
    }

    /// Draws dropout masks from `generator` from now on.
    pub fn draw_dropout_from(&mut self, generator: JobGenerator) {
        self.noise = Some(generator);
    }

    /// Whether a patch of `shape` pools to the 4×5×4 the linear layer expects.
    pub fn accepts(shape: [i64; 3]) -> bool {
        pooled_shape(shape, 3) == CODE_SHAPE
    }
}

impl ModuleT for CustomNetwork {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        for block in &self.blocks {
            x = pad_max_pool3d(
                &block
                    .bn
                    .forward_t(&block.conv.forward(&x), train)
                    .leaky_relu(),
                2,
                2,
            );
        }
        let x = rng::dropout(&x.flatten(1, -1), 0.5, train, self.noise.as_ref());
        self.fc.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn output_shape_and_names() {
        // Draws from libtorch's default generator, which other tests check.
        let _default = crate::rng::default_generator();
        let vs = nn::VarStore::new(Device::Cpu);
        let net = CustomNetwork::new(&vs.root());
        let x = Tensor::rand([3, 1, 30, 40, 30], (Kind::Float, Device::Cpu));
        assert_eq!(net.forward_t(&x, false).size(), vec![3, 2]);
        assert_eq!(net.forward_t(&x, true).size(), vec![3, 2]);
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        let mut want = vec!["linear.1.bias".to_string(), "linear.1.weight".to_string()];
        for (conv, bn) in [(0, 1), (4, 5), (8, 9)] {
            want.push(format!("convolutions.{conv}.weight"));
            want.push(format!("convolutions.{conv}.bias"));
            for p in ["weight", "bias", "running_mean", "running_var"] {
                want.push(format!("convolutions.{bn}.{p}"));
            }
        }
        want.sort();
        assert_eq!(names, want);
        assert_eq!(vs.variables()["linear.1.weight"].size(), vec![2, 2560]);
    }

    #[test]
    fn accepted_patch_shapes() {
        assert!(CustomNetwork::accepts([30, 40, 30]));
        assert!(!CustomNetwork::accepts([34, 44, 34]));
        assert!(!CustomNetwork::accepts([8, 8, 8]));
    }
}
