//! The lab's custom layers and PyTorch's default initialisation.
//!
//! - [`pad_max_pool3d`] is the lab's `PadMaxPool3d`: before pooling it pads
//!   every odd dimension with zeros at the *front* (`ConstantPad3d((pz,0,
//!   py,0,px,0))`), so no voxel is dropped (15 → 8, not 7).
//! - [`crop_max_unpool3d`] is `CropMaxUnpool3d`: unpool with the pooling's
//!   indices, then cut that front padding off again.
//! - [`conv3d`], [`conv_transpose3d`], [`linear`], [`batch_norm3d`] build the
//!   layers with PyTorch's defaults. tch's defaults differ (Kaiming-uniform
//!   with ReLU gain, zero conv bias, BN weight ~ U(0,1)); PyTorch uses
//!   `kaiming_uniform_(a=√5)`, which is U(±1/√fan_in), the same bound for the
//!   bias, and BN weight 1. With tch's larger init, training at the lab's
//!   lr 1e-4 stalls, so we follow PyTorch.

use tch::nn::{self, Init};
use tch::Tensor;

/// Result of a pooling that keeps what the unpooling needs.
pub struct Pooled {
    pub out: Tensor,
    pub indices: Tensor,
    /// Front padding added to (D, H, W).
    pub pad: [i64; 3],
}

/// Front padding that makes each spatial dim of `x` ([N,C,D,H,W]) a multiple of `stride`.
fn front_pad(x: &Tensor, stride: i64) -> [i64; 3] {
    let size = x.size();
    let mut pad = [0i64; 3];
    for (p, &d) in pad.iter_mut().zip(size.iter().skip(2)) {
        // The lab: coord = stride - size % stride, and 0 when that is stride.
        *p = (stride - d % stride) % stride;
    }
    pad
}

fn padded(x: &Tensor, pad: [i64; 3]) -> Tensor {
    if pad == [0, 0, 0] {
        return x.shallow_clone();
    }
    // F.pad order: last dim first, (front, back) pairs.
    x.constant_pad_nd([pad[2], 0, pad[1], 0, pad[0], 0])
}

/// `PadMaxPool3d(kernel, stride)` without indices (the CNN's).
pub fn pad_max_pool3d(x: &Tensor, kernel: i64, stride: i64) -> Tensor {
    let pad = front_pad(x, stride);
    max_pool(&padded(x, pad), kernel, stride).0
}

/// `PadMaxPool3d(kernel, stride, return_indices=True, return_pad=True)` (the autoencoder's).
pub fn pad_max_pool3d_with_indices(x: &Tensor, kernel: i64, stride: i64) -> Pooled {
    let pad = front_pad(x, stride);
    let (out, indices) = max_pool(&padded(x, pad), kernel, stride);
    Pooled { out, indices, pad }
}

/// libtorch's 3-D max pooling, with its indices, faster on the CPU.
///
/// libtorch's kernel for channels-last input runs along the channels with
/// vector instructions: three times as fast as the plain one on the lab's
/// first block (4 × 8 × 30 × 40 × 30), where pooling took a fifth of a lab
/// run's CPU time. Its maxima and indices are the same bytes (a max is
/// exact, and both kernels keep the first maximum of a window, scanned in
/// the same order); both come back in the usual layout. Its backward is
/// slower, though, so with a gradient wanted the indices come from it
/// without one, and the maxima are gathered at them: windows that do not
/// overlap (`kernel == stride`, the lab's) give each input voxel at most one
/// output, so the gather's backward puts each gradient where max pooling's
/// backward would, with nothing summed: the same bytes again. A GPU, or
/// overlapping windows, take libtorch's pooling as it is.
fn max_pool(x: &Tensor, kernel: i64, stride: i64) -> (Tensor, Tensor) {
    let pool =
        |t: &Tensor| t.max_pool3d_with_indices([kernel; 3], [stride; 3], [0; 3], [1; 3], false);
    if x.device() != tch::Device::Cpu || kernel != stride {
        return pool(x);
    }
    let channels_last_pool = |t: &Tensor| {
        // N, C, D, H, W viewed over N, D, H, W, C memory: channels-last strides.
        let cl = t
            .permute([0, 2, 3, 4, 1])
            .contiguous()
            .permute([0, 4, 1, 2, 3]);
        let (out, indices) = pool(&cl);
        (out.contiguous(), indices.contiguous())
    };
    if !x.requires_grad() {
        return channels_last_pool(x);
    }
    let (_, indices) = tch::no_grad(|| channels_last_pool(&x.detach()));
    let out = x
        .flatten(2, -1)
        .gather(2, &indices.flatten(2, -1), false)
        .view(indices.size().as_slice());
    (out, indices)
}

/// `CropMaxUnpool3d(kernel, stride)`: unpool to the padded size, then drop the front padding.
pub fn crop_max_unpool3d(
    x: &Tensor,
    indices: &Tensor,
    pad: [i64; 3],
    kernel: i64,
    stride: i64,
) -> Tensor {
    let size = x.size();
    // nn.MaxUnpool3d's default output size: (in - 1)·stride + kernel.
    let out_size: Vec<i64> = size
        .iter()
        .skip(2)
        .map(|&d| (d - 1) * stride + kernel)
        .collect();
    let out = x.max_unpool3d(indices, out_size.as_slice(), [stride; 3], [0; 3]);
    let mut out = out;
    for (axis, &p) in pad.iter().enumerate() {
        if p > 0 {
            let dim = axis as i64 + 2;
            let len = out.size().get(dim as usize).copied().unwrap_or(p) - p;
            out = out.narrow(dim, p, len);
        }
    }
    out
}

/// U(±1/√fan_in): PyTorch's `kaiming_uniform_(a=√5)` and its bias rule.
fn torch_uniform(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// `nn.Conv3d(i, o, k, padding=p)` as PyTorch initialises it.
pub fn conv3d(vs: nn::Path, i: i64, o: i64, k: i64, padding: i64) -> nn::Conv3D {
    let init = torch_uniform(i * k * k * k);
    nn::conv3d(
        vs,
        i,
        o,
        k,
        nn::ConvConfig {
            padding,
            ws_init: init,
            bs_init: init,
            ..Default::default()
        },
    )
}

/// `nn.ConvTranspose3d(i, o, k, padding=p)` as PyTorch initialises it. Its
/// weight is [i, o, k, k, k], and PyTorch's fan_in reads dim 1: o·k³.
pub fn conv_transpose3d(vs: nn::Path, i: i64, o: i64, k: i64, padding: i64) -> nn::ConvTranspose3D {
    let init = torch_uniform(o * k * k * k);
    nn::conv_transpose3d(
        vs,
        i,
        o,
        k,
        nn::ConvTransposeConfig {
            padding,
            ws_init: init,
            bs_init: init,
            ..Default::default()
        },
    )
}

/// `nn.Linear(i, o)` as PyTorch initialises it.
pub fn linear(vs: nn::Path, i: i64, o: i64) -> nn::Linear {
    let init = torch_uniform(i);
    nn::linear(
        vs,
        i,
        o,
        nn::LinearConfig {
            ws_init: init,
            bs_init: Some(init),
            bias: true,
        },
    )
}

/// `nn.BatchNorm3d(n)` as PyTorch initialises it (weight 1, bias 0, eps 1e-5, momentum 0.1).
pub fn batch_norm3d(vs: nn::Path, n: i64) -> nn::BatchNorm {
    nn::batch_norm3d(
        vs,
        n,
        nn::BatchNormConfig {
            ws_init: Init::Const(1.0),
            bs_init: Init::Const(0.0),
            ..Default::default()
        },
    )
}

/// The input size the lab's `PadMaxPool3d(2, 2)` gives, applied `times` times.
pub fn pooled_shape(shape: [i64; 3], times: u32) -> [i64; 3] {
    shape.map(|mut d| {
        for _ in 0..times {
            d = (d + 1) / 2;
        }
        d
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn odd_dims_are_padded_at_the_front() {
        // 1×1×3×2×1: depth 3 is odd, so one zero plane goes in front.
        let x = Tensor::from_slice(&[-1.0f32, -2.0, 5.0, 6.0, 3.0, 4.0]).reshape([1, 1, 3, 2, 1]);
        let pooled = pad_max_pool3d_with_indices(&x, 2, 2);
        assert_eq!(pooled.pad, [1, 0, 1]);
        assert_eq!(pooled.out.size(), vec![1, 1, 2, 1, 1]);
        // First window: the zero pad plane and (-1, -2) → max 0 (the pad wins, as in the lab).
        let got = Vec::<f32>::try_from(pooled.out.flatten(0, -1)).unwrap();
        assert_eq!(got, vec![0.0, 6.0]);
    }

    #[test]
    fn unpool_inverts_pool_on_odd_dims() {
        // Draws from libtorch's default generator, which other tests check.
        let _default = crate::rng::default_generator();
        tch::manual_seed(3);
        // Positive values so that no pad zero is ever the maximum.
        let x = Tensor::rand([2, 3, 15, 20, 15], (Kind::Float, Device::Cpu)) + 0.1;
        let pooled = pad_max_pool3d_with_indices(&x, 2, 2);
        assert_eq!(pooled.out.size(), vec![2, 3, 8, 10, 8]);
        assert_eq!(pooled.pad, [1, 0, 1]);
        let back = crop_max_unpool3d(&pooled.out, &pooled.indices, pooled.pad, 2, 2);
        assert_eq!(back.size(), x.size());
        // Every kept voxel is back in place, every other one is zero.
        let kept = back.ne(0.0);
        let diff = (&back - &x * kept.to_kind(Kind::Float))
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(diff, 0.0);
        // One maximum per 2×2×2 window survives: as many non-zeros as pooled values.
        assert_eq!(
            kept.sum(Kind::Int64).int64_value(&[]),
            pooled.out.numel() as i64
        );
        // And pooling what came back gives the same maxima.
        let again = pad_max_pool3d(&back, 2, 2);
        assert_eq!((again - &pooled.out).abs().max().double_value(&[]), 0.0);
    }

    /// The faster pooling (channels-last, maxima gathered under a gradient)
    /// gives libtorch's plain pooling's maxima, indices and input gradient to
    /// the byte, ties included (a third of the voxels are zero here, as after
    /// a ReLU).
    #[test]
    fn fast_pooling_is_libtorchs_to_the_byte() {
        let _default = crate::rng::default_generator();
        tch::manual_seed(5);
        let opts = (Kind::Float, Device::Cpu);
        let x = (Tensor::randn([2, 8, 14, 20, 14], opts) - 0.4).relu();
        let plain = |t: &Tensor| t.max_pool3d_with_indices([2; 3], [2; 3], [0; 3], [1; 3], false);
        let (want, want_idx) = plain(&x);
        let (got, got_idx) = tch::no_grad(|| max_pool(&x, 2, 2));
        assert!(got.equal(&want), "maxima differ");
        assert!(got_idx.equal(&want_idx), "indices differ");
        let g = Tensor::randn(want.size(), opts);
        let backward = |fast: bool| {
            let leaf = x.copy().set_requires_grad(true);
            let (out, idx) = if fast {
                max_pool(&leaf, 2, 2)
            } else {
                plain(&leaf)
            };
            (&out * &g).sum(Kind::Float).backward();
            (out.detach(), idx, leaf.grad())
        };
        let (a, b) = (backward(false), backward(true));
        assert!(
            b.0.equal(&a.0) && b.1.equal(&a.1),
            "forward with a gradient differs"
        );
        assert!(b.2.equal(&a.2), "input gradients differ");
    }

    #[test]
    fn pooled_shapes_match_the_labs_comments() {
        assert_eq!(pooled_shape([30, 40, 30], 1), [15, 20, 15]);
        assert_eq!(pooled_shape([30, 40, 30], 2), [8, 10, 8]);
        assert_eq!(pooled_shape([30, 40, 30], 3), [4, 5, 4]);
    }

    #[test]
    fn init_bounds_follow_pytorch() {
        // Draws from libtorch's default generator, which other tests check.
        let _default = crate::rng::default_generator();
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = conv3d(vs.root() / "c", 8, 16, 3, 1);
        let bound = 1.0 / ((8 * 27) as f64).sqrt();
        assert!(conv.ws.abs().max().double_value(&[]) <= bound);
        let bias = conv
            .bs
            .as_ref()
            .map(|b| b.abs().max().double_value(&[]))
            .unwrap_or(0.0);
        // Non-zero bias (tch's default is 0) within the same bound.
        assert!(bias > 0.0 && bias <= bound);
        let convt = conv_transpose3d(vs.root() / "t", 32, 16, 3, 1);
        assert_eq!(convt.ws.size(), vec![32, 16, 3, 3, 3]);
        assert!(convt.ws.abs().max().double_value(&[]) <= 1.0 / ((16 * 27) as f64).sqrt());
        let bn = batch_norm3d(vs.root() / "b", 4);
        let w = bn
            .ws
            .as_ref()
            .map(|w| w.sum(Kind::Float).double_value(&[]))
            .unwrap_or(0.0);
        assert_eq!(w, 4.0);
    }
}
