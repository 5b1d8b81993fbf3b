//! The lab's `AutoEncoder`: compresses a 30×40×30 patch to an 80-value code.
//!
//! Encoder: three Conv3d → BatchNorm3d → LeakyReLU → PadMaxPool3d blocks
//! (8, 16, 32 filters, pooling returns indices and padding), then
//! Conv3d(32 → 1, k1): the code is 1×4×5×4. Decoder: ConvTranspose3d(1 → 32,
//! k1), then three CropMaxUnpool3d → ConvTranspose3d(k3, p1) → BatchNorm3d →
//! activation steps (32 → 16 → 8 → 1), LeakyReLU except a final Sigmoid. The
//! lab trains it with Adam at lr 1e-2 and summed MSE; its per-voxel training
//! loss reaches about 0.0115 after 30 epochs.
//!
//! Parameter names are the PyTorch module's (`encoder.0.weight`,
//! `encoder.12.bias`, `decoder.0.weight`, …, `decoder.11.running_var`).

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use super::layers::{
    batch_norm3d, conv3d, conv_transpose3d, crop_max_unpool3d, pad_max_pool3d_with_indices,
};

const FILTERS: [i64; 3] = [8, 16, 32];

#[derive(Debug)]
struct EncoderBlock {
    conv: nn::Conv3D,
    bn: nn::BatchNorm,
}

#[derive(Debug)]
struct DecoderBlock {
    conv: nn::ConvTranspose3D,
    bn: nn::BatchNorm,
}

#[derive(Debug)]
pub struct AutoEncoder {
    encoder: Vec<EncoderBlock>,
    to_code: nn::Conv3D,
    from_code: nn::ConvTranspose3D,
    /// In decoding order: 32→16, 16→8, 8→1.
    decoder: Vec<DecoderBlock>,
}

impl AutoEncoder {
    /// Module paths of the BatchNorm layers (for `num_batches_tracked`).
    pub const BATCH_NORMS: [&'static str; 6] = [
        "encoder.1",
        "encoder.5",
        "encoder.9",
        "decoder.3",
        "decoder.7",
        "decoder.11",
    ];

    pub fn new(vs: &nn::Path) -> AutoEncoder {
        let enc = vs / "encoder";
        let dec = vs / "decoder";
        let mut encoder = Vec::new();
        let mut channels = 1;
        for (b, &filters) in FILTERS.iter().enumerate() {
            let base = 4 * b;
            encoder.push(EncoderBlock {
                conv: conv3d(&enc / base, channels, filters, 3, 1),
                bn: batch_norm3d(&enc / (base + 1), filters),
            });
            channels = filters;
        }
        let to_code = conv3d(&enc / 12, channels, 1, 1, 0);
        let from_code = conv_transpose3d(&dec / 0, 1, channels, 1, 0);
        // Sequential indices: unpool 4b+1, conv 4b+2, bn 4b+3, activation 4b+4.
        let mut decoder = Vec::new();
        for (b, &out) in [16, 8, 1].iter().enumerate() {
            let base = 4 * b;
            decoder.push(DecoderBlock {
                conv: conv_transpose3d(&dec / (base + 2), channels, out, 3, 1),
                bn: batch_norm3d(&dec / (base + 3), out),
            });
            channels = out;
        }
        AutoEncoder {
            encoder,
            to_code,
            from_code,
            decoder,
        }
    }

    /// (code [N, 80] for a 30×40×30 patch, reconstruction [N, 1, D, H, W]).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> (Tensor, Tensor) {
        let mut x = xs.shallow_clone();
        let mut pools = Vec::new();
        for block in &self.encoder {
            let pooled = pad_max_pool3d_with_indices(
                &block
                    .bn
                    .forward_t(&block.conv.forward(&x), train)
                    .leaky_relu(),
                2,
                2,
            );
            x = pooled.out.shallow_clone();
            pools.push(pooled);
        }
        let x = self.to_code.forward(&x);
        let code = x.flatten(1, -1);
        let mut x = self.from_code.forward(&x);
        let last = self.decoder.len().saturating_sub(1);
        for (k, block) in self.decoder.iter().enumerate() {
            // The lab pops the most recent pooling first.
            if let Some(pooled) = pools.pop() {
                x = crop_max_unpool3d(&x, &pooled.indices, pooled.pad, 2, 2);
            }
            x = block.bn.forward_t(&block.conv.forward(&x), train);
            x = if k == last {
                x.sigmoid()
            } else {
                x.leaky_relu()
            };
        }
        (code, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn shapes_and_names() {
        // Draws from libtorch's default generator, which other tests check.
        let _default = crate::rng::default_generator();
        let vs = nn::VarStore::new(Device::Cpu);
        let ae = AutoEncoder::new(&vs.root());
        let x = Tensor::rand([2, 1, 30, 40, 30], (Kind::Float, Device::Cpu));
        let (code, out) = ae.forward_t(&x, true);
        assert_eq!(code.size(), vec![2, 80]);
        assert_eq!(out.size(), x.size());
        let (_, out) = ae.forward_t(&x, false);
        let (lo, hi) = (out.min().double_value(&[]), out.max().double_value(&[]));
        assert!(
            (0.0..=1.0).contains(&lo) && hi <= 1.0,
            "sigmoid output in [0, 1]"
        );
        let vars = vs.variables();
        assert_eq!(vars["encoder.12.weight"].size(), vec![1, 32, 1, 1, 1]);
        assert_eq!(vars["decoder.0.weight"].size(), vec![1, 32, 1, 1, 1]);
        assert_eq!(vars["decoder.2.weight"].size(), vec![32, 16, 3, 3, 3]);
        assert_eq!(vars["decoder.10.weight"].size(), vec![8, 1, 3, 3, 3]);
        assert_eq!(vars["decoder.11.running_var"].size(), vec![1]);
        // 3 encoder conv + 3 decoder conv-transposed blocks (2 + 4 each) + code conv + from-code.
        assert_eq!(vars.len(), 6 * 6 + 2 + 2);
    }
}
