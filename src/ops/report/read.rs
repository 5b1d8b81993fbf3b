//! The autoencoder's `sample.safetensors`, which only the report reads (the
//! other upstream files come through [`crate::artifact`]). Every error names
//! the file.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::slices::Grid3;
use crate::ops::OpError;

fn bad(path: &Path, what: impl std::fmt::Display) -> OpError {
    OpError::Msg(format!("{}: {what}", path.display()))
}

/// The autoencoder's sample: its `input` and `output` F32 tensors, each
/// squeezed of size-1 axes to 3-D (`[30, 40, 30]` for the lab's crops).
pub fn ae_sample(path: &Path) -> Result<(Grid3, Grid3), OpError> {
    let bytes = std::fs::read(path).map_err(|e| OpError::io(path, e))?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
    let grid = |name: &str| -> Result<Grid3, OpError> {
        let view = tensors.tensor(name).map_err(|_| {
            bad(
                path,
                format!(
                    "no tensor `{name}`; it holds {}; `train_ae` writes `input` and `output`",
                    tensors.names().join(", ")
                ),
            )
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(
                path,
                format!("tensor `{name}` is {:?}, expected F32", view.dtype()),
            ));
        }
        let shape: Vec<usize> = view.shape().iter().copied().filter(|&d| d != 1).collect();
        let dims: [usize; 3] = shape.as_slice().try_into().map_err(|_| {
            bad(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, expected a 3-D volume like [30, 40, 30]",
                    view.shape()
                ),
            )
        })?;
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Grid3::c_order(dims, data).map_err(|e| bad(path, format!("tensor `{name}`: {e}")))
    };
    Ok((grid("input")?, grid("output")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_sample_reads_and_checks_tensors() {
        use safetensors::tensor::TensorView;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sample.safetensors");
        let data: Vec<u8> = (0..24).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let write = |names: &[(&str, Vec<usize>)]| {
            let views: Vec<(String, TensorView)> = names
                .iter()
                .map(|(n, s)| {
                    (
                        n.to_string(),
                        TensorView::new(Dtype::F32, s.clone(), &data).unwrap(),
                    )
                })
                .collect();
            safetensors::serialize_to_file(views, None, &p).unwrap();
        };
        write(&[("input", vec![1, 2, 3, 4]), ("output", vec![2, 3, 4])]);
        let (a, b) = ae_sample(&p).unwrap();
        assert_eq!(a.dims, [2, 3, 4]);
        assert_eq!(b.get(1, 2, 3), Some(23.0));
        write(&[("input", vec![2, 3, 4])]);
        let msg = ae_sample(&p).unwrap_err().to_string();
        assert!(msg.contains("no tensor `output`"), "{msg}");
        write(&[("input", vec![6, 4]), ("output", vec![6, 4])]);
        assert!(ae_sample(&p)
            .unwrap_err()
            .to_string()
            .contains("expected a 3-D"));
        std::fs::write(&p, b"junk").unwrap();
        assert!(ae_sample(&p)
            .unwrap_err()
            .to_string()
            .contains("not a safetensors"));
    }
}
