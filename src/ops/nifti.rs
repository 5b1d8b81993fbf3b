//! Reading NIfTI-1 images (`.nii` / `.nii.gz`) into an f32 volume.
//!
//! The parsing (348-byte header in either byte order, `vox_offset`, gzip,
//! extensions) is the `nifti` crate's (nifti-rs, maintained, no default
//! features so it pulls neither ndarray 0.17 nor nalgebra); this module only
//! turns its raw typed data into `f32` with the header's `scl_slope` /
//! `scl_inter` applied, as NiBabel's `get_fdata` does, and reports errors
//! with the file's path.
//!
//! Voxel order is NIfTI's: x fastest, then y, then z (index
//! `x + nx * (y + ny * z)`); see [`Volume::at`].

use std::path::Path;

use ::nifti::{InMemNiftiVolume, NiftiObject, NiftiType, NiftiVolume, ReaderOptions};

use super::OpError;

/// An image's grid and its voxel values, scaled to physical units.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// Size of each axis (`dim[1..=dim[0]]` of the header), x first.
    pub dims: Vec<usize>,
    /// Voxel size of each axis (`pixdim[1..=dim[0]]`), usually millimetres.
    pub voxel_size: Vec<f32>,
    /// The on-disk datatype, e.g. `Int16`.
    pub datatype: NiftiType,
    /// `dims.iter().product()` values, x fastest.
    pub data: Vec<f32>,
}

impl Volume {
    /// The value at `coords` (one per axis), or `None` outside the grid.
    pub fn at(&self, coords: &[usize]) -> Option<f32> {
        if coords.len() != self.dims.len() {
            return None;
        }
        let mut index = 0;
        let mut stride = 1;
        for (&c, &n) in coords.iter().zip(&self.dims) {
            if c >= n {
                return None;
            }
            index += c * stride;
            stride *= n;
        }
        self.data.get(index).copied()
    }
}

/// Reads a NIfTI-1 file (gzipped when its name ends in `.gz`).
///
/// Supported datatypes: uint8, int8, int16, uint16, int32, uint32, float32
/// and float64 (what T1 images and probability maps use).
pub fn read_nifti(path: &Path) -> Result<Volume, OpError> {
    let fail = |what: String| OpError::Msg(format!("{}: {what}", path.display()));
    let object = ReaderOptions::new()
        .read_file(path)
        .map_err(|e| fail(format!("cannot read as NIfTI-1: {e}")))?;
    let header = object.header().clone();
    let volume = object.into_volume();
    let rank = volume.dimensionality();
    let dims: Vec<usize> = volume.dim().iter().map(|&d| usize::from(d)).collect();
    let voxel_size = header.pixdim.iter().skip(1).take(rank).copied().collect();
    let datatype = volume.data_type();
    let raw = typed_data(volume, datatype)
        .map_err(|e| fail(format!("cannot decode the {datatype:?} voxels: {e}")))?;
    let expected: usize = dims.iter().product();
    if raw.len() != expected {
        return Err(fail(format!(
            "{} voxels for a {dims:?} grid of {expected}",
            raw.len()
        )));
    }
    // NIfTI-1: a zero slope means "no scaling"; NaN/inf would poison every voxel.
    let (slope, inter) = (header.scl_slope, header.scl_inter);
    let data =
        if slope != 0.0 && slope.is_finite() && inter.is_finite() && (slope, inter) != (1.0, 0.0) {
            raw.into_iter().map(|v| v * slope + inter).collect()
        } else {
            raw
        };
    Ok(Volume {
        dims,
        voxel_size,
        datatype,
        data,
    })
}

fn typed_data(volume: InMemNiftiVolume, datatype: NiftiType) -> Result<Vec<f32>, String> {
    fn cast<T: Copy>(v: Vec<T>, f: fn(T) -> f32) -> Vec<f32> {
        v.into_iter().map(f).collect()
    }
    let e = |e: ::nifti::NiftiError| e.to_string();
    // The casts to f32 are NiBabel's: exact for 8/16-bit integers, rounded
    // beyond 2^24 for 32-bit ones and for float64.
    Ok(match datatype {
        NiftiType::Uint8 => cast(volume.into_nifti_typed_data::<u8>().map_err(e)?, f32::from),
        NiftiType::Int8 => cast(volume.into_nifti_typed_data::<i8>().map_err(e)?, f32::from),
        NiftiType::Int16 => cast(volume.into_nifti_typed_data::<i16>().map_err(e)?, f32::from),
        NiftiType::Uint16 => cast(volume.into_nifti_typed_data::<u16>().map_err(e)?, f32::from),
        NiftiType::Int32 => cast(volume.into_nifti_typed_data::<i32>().map_err(e)?, |v| {
            v as f32
        }),
        NiftiType::Uint32 => cast(volume.into_nifti_typed_data::<u32>().map_err(e)?, |v| {
            v as f32
        }),
        NiftiType::Float32 => volume.into_nifti_typed_data::<f32>().map_err(e)?,
        NiftiType::Float64 => cast(volume.into_nifti_typed_data::<f64>().map_err(e)?, |v| {
            v as f32
        }),
        other => {
            return Err(format!(
                "datatype {other:?} is not supported (use int/uint 8-32 or float32/64)"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A NIfTI-1 single file (`n+1`) by hand: header fields at the offsets of
    /// the NIfTI-1 standard, 4 bytes of empty extension, data at 352.
    fn nifti_bytes(
        big_endian: bool,
        dims: &[u16],
        datatype: i16,
        bitpix: i16,
        slope: f32,
        inter: f32,
        data: &[u8],
    ) -> Vec<u8> {
        let mut h = vec![0u8; 352];
        let mut put =
            |offset: usize, bytes: &[u8]| h[offset..offset + bytes.len()].copy_from_slice(bytes);
        let i32b = |v: i32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let i16b = |v: i16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let f32b = |v: f32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        put(0, &i32b(348));
        put(40, &i16b(dims.len() as i16));
        for (i, &d) in dims.iter().enumerate() {
            put(42 + 2 * i, &i16b(d as i16));
        }
        put(70, &i16b(datatype));
        put(72, &i16b(bitpix));
        put(76, &f32b(1.0)); // qfac
        for i in 0..dims.len() {
            put(80 + 4 * i, &f32b(1.5));
        }
        put(108, &f32b(352.0));
        put(112, &f32b(slope));
        put(116, &f32b(inter));
        put(344, b"n+1\0");
        h.extend_from_slice(data);
        h
    }

    fn write_gz(path: &Path, bytes: &[u8]) {
        let mut encoder = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::fast(),
        );
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap();
    }

    #[test]
    fn both_byte_orders_and_the_supported_types() {
        let dir = tempfile::tempdir().unwrap();
        let dims = [2u16, 3, 2];
        let values: Vec<f64> = (0..12).map(|v| v as f64 - 3.0).collect();
        for big in [false, true] {
            let order = |b: &[u8]| -> Vec<u8> {
                if big {
                    b.iter().rev().copied().collect()
                } else {
                    b.to_vec()
                }
            };
            let cases: [(i16, i16, Vec<u8>); 4] = [
                (2, 8, values.iter().map(|&v| (v + 3.0) as u8).collect()),
                (
                    4,
                    16,
                    values
                        .iter()
                        .flat_map(|&v| order(&(v as i16).to_le_bytes()))
                        .collect(),
                ),
                (
                    16,
                    32,
                    values
                        .iter()
                        .flat_map(|&v| order(&(v as f32).to_le_bytes()))
                        .collect(),
                ),
                (
                    64,
                    64,
                    values
                        .iter()
                        .flat_map(|&v| order(&v.to_le_bytes()))
                        .collect(),
                ),
            ];
            for (datatype, bitpix, data) in cases {
                let path = dir.path().join(format!("t{datatype}{big}.nii.gz"));
                write_gz(
                    &path,
                    &nifti_bytes(big, &dims, datatype, bitpix, 0.0, 0.0, &data),
                );
                let volume = read_nifti(&path).unwrap();
                assert_eq!(volume.dims, [2, 3, 2]);
                assert_eq!(volume.voxel_size, [1.5, 1.5, 1.5]);
                let offset = if datatype == 2 { 3.0 } else { 0.0 };
                let expected: Vec<f32> = values.iter().map(|&v| (v + offset) as f32).collect();
                assert_eq!(
                    volume.data, expected,
                    "datatype {datatype}, big endian {big}"
                );
                // x fastest: (1, 2, 1) is 1 + 2 * (2 + 3 * 1) = 11
                assert_eq!(volume.at(&[1, 2, 1]), Some(expected[11]));
                assert_eq!(volume.at(&[2, 0, 0]), None);
            }
        }
    }

    #[test]
    fn slope_and_intercept_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scaled.nii");
        let data: Vec<u8> = [10i16, -4].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(
            &path,
            nifti_bytes(false, &[2, 1, 1], 4, 16, 0.5, 100.0, &data),
        )
        .unwrap();
        assert_eq!(read_nifti(&path).unwrap().data, [105.0, 98.0]);
    }

    #[test]
    fn broken_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.nii.gz");
        write_gz(&path, b"not a nifti header");
        let msg = read_nifti(&path).unwrap_err().to_string();
        assert!(
            msg.contains("broken.nii.gz") && msg.contains("NIfTI"),
            "{msg}"
        );
        let truncated = dir.path().join("short.nii");
        std::fs::write(
            &truncated,
            nifti_bytes(false, &[4, 4, 4], 16, 32, 0.0, 0.0, &[0; 8]),
        )
        .unwrap();
        let msg = read_nifti(&truncated).unwrap_err().to_string();
        assert!(msg.contains("short.nii"), "{msg}");
        assert!(read_nifti(&dir.path().join("absent.nii")).is_err());
    }

    /// The lab's raw OASIS T1 (shared/data, beside the repository).
    #[test]
    fn reads_the_real_oasis_t1() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data/oasis1/raw/sub-OASIS10019_ses-M00_T1w.nii.gz");
        if !path.exists() {
            eprintln!(
                "skipped: {} is not there (shared/ data absent)",
                path.display()
            );
            return;
        }
        let volume = read_nifti(&path).unwrap();
        assert_eq!(volume.dims, [256, 256, 160]);
        assert_eq!(volume.datatype, NiftiType::Int16);
        assert_eq!(volume.data.len(), 256 * 256 * 160);
        let max = volume.data.iter().copied().fold(f32::MIN, f32::max);
        let min = volume.data.iter().copied().fold(f32::MAX, f32::min);
        // An int16 T1: integer intensities, air near 0, a bright head.
        assert!(
            min >= 0.0 && max > 100.0 && max <= 32767.0,
            "range {min}..{max}"
        );
        assert!(volume.data.iter().all(|v| v.fract() == 0.0));
        // The head is in the middle of the field of view, not at its corner.
        let centre = volume.at(&[128, 128, 80]).unwrap();
        let corner = volume.at(&[2, 2, 2]).unwrap();
        assert!(centre > corner, "centre {centre}, corner {corner}");
    }
}
