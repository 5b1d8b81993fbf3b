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
//! `x + nx * (y + ny * z)`); see [`Volume::at`]. Where the voxel axes point
//! in the world comes from the header's sform (or, without one, its qform):
//! [`Volume::affine`] and [`Volume::axis_codes`] (NiBabel's `aff2axcodes`).

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
    /// Voxel (i, j, k) to world (x, y, z, millimetres, RAS+): the sform when
    /// `sform_code > 0`, else the qform when `qform_code > 0`, else `None`
    /// (an Analyze-style header that does not say where its axes point).
    pub affine: Option<Affine>,
}

/// The rows of a NIfTI voxel-to-world matrix: `world[r] = sum_c m[r][c] * voxel[c] + m[r][3]`.
pub type Affine = [[f64; 4]; 3];

/// Which world direction each voxel axis points to, as NiBabel's
/// `aff2axcodes` names it: the column's largest component, `R`/`L` (x),
/// `A`/`P` (y), `S`/`I` (z), the sign choosing. `LAS` means the first axis
/// runs from right to left, the second from back to front, the third upward.
pub fn axis_codes(affine: &Affine) -> String {
    const LABELS: [[char; 2]; 3] = [['R', 'L'], ['A', 'P'], ['S', 'I']];
    (0..3)
        .map(|c| {
            let column = [affine[0][c], affine[1][c], affine[2][c]];
            let (row, v) = column
                .iter()
                .enumerate()
                .fold((0, 0.0f64), |best, (r, &v)| {
                    if v.abs() > best.1.abs() {
                        (r, v)
                    } else {
                        best
                    }
                });
            match (LABELS.get(row), v) {
                (_, v) if v == 0.0 || !v.is_finite() => '?',
                (Some([pos, _]), v) if v > 0.0 => *pos,
                (Some([_, neg]), _) => *neg,
                (None, _) => '?',
            }
        })
        .collect()
}

/// The header's voxel-to-world matrix ([`Volume::affine`]).
fn header_affine(h: &::nifti::NiftiHeader) -> Option<Affine> {
    let row = |r: [f32; 4]| r.map(f64::from);
    if h.sform_code > 0 {
        return Some([row(h.srow_x), row(h.srow_y), row(h.srow_z)]);
    }
    if h.qform_code <= 0 {
        return None;
    }
    // NIfTI-1 method 2: a unit quaternion (b, c, d; a from them), voxel
    // sizes, qfac (pixdim[0], -1 flips the third axis) and an offset.
    let (b, c, d) = (
        f64::from(h.quatern_b),
        f64::from(h.quatern_c),
        f64::from(h.quatern_d),
    );
    let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
    let rot = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - b * b - c * c,
        ],
    ];
    let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let size = [
        f64::from(h.pixdim[1]),
        f64::from(h.pixdim[2]),
        f64::from(h.pixdim[3]) * qfac,
    ];
    let offset = [h.quatern_x, h.quatern_y, h.quatern_z].map(f64::from);
    let mut m = [[0.0; 4]; 3];
    for (r, out) in m.iter_mut().enumerate() {
        for (c, cell) in out.iter_mut().take(3).enumerate() {
            *cell = rot[r][c] * size[c];
        }
        out[3] = offset[r];
    }
    Some(m)
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

/// An image's header, read without its voxels: what [`read_nifti`] would
/// return but the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// `dim[1..=dim[0]]`.
    pub dims: Vec<usize>,
    /// `pixdim[1..=dim[0]]`.
    pub voxel_size: Vec<f32>,
    /// The datatype code, and its name when the code is a NIfTI-1 one.
    pub datatype: (i16, Option<NiftiType>),
    pub affine: Option<Affine>,
}

/// The datatypes [`read_nifti`] turns into `f32`.
pub const SUPPORTED: [NiftiType; 8] = [
    NiftiType::Uint8,
    NiftiType::Int8,
    NiftiType::Int16,
    NiftiType::Uint16,
    NiftiType::Int32,
    NiftiType::Uint32,
    NiftiType::Float32,
    NiftiType::Float64,
];

/// Reads only a NIfTI-1 file's header (the first 348 bytes, gunzipped when
/// the name ends in `.gz`): cheap checks before decoding a whole volume.
pub fn read_header(path: &Path) -> Result<Header, OpError> {
    let h = ::nifti::NiftiHeader::from_file(path).map_err(|e| {
        OpError::Msg(format!(
            "{}: cannot read a NIfTI-1 header: {e}",
            path.display()
        ))
    })?;
    let dims: Vec<usize> = h
        .dim()
        .map_err(|e| OpError::Msg(format!("{}: bad `dim` in the header: {e}", path.display())))?
        .iter()
        .map(|&d| usize::from(d))
        .collect();
    Ok(Header {
        voxel_size: h.pixdim.iter().skip(1).take(dims.len()).copied().collect(),
        dims,
        datatype: (h.datatype, h.data_type().ok()),
        affine: header_affine(&h),
    })
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
    let affine = header_affine(&header);
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
    // Scaled in f64 and then rounded, as NiBabel's `get_fdata()` followed by
    // torch's `.float()` does (ClinicaDL's way from a NIfTI to a `.pt`).
    let (slope, inter) = (f64::from(header.scl_slope), f64::from(header.scl_inter));
    let data =
        if slope != 0.0 && slope.is_finite() && inter.is_finite() && (slope, inter) != (1.0, 0.0) {
            raw.into_iter()
                .map(|v| (f64::from(v) * slope + inter) as f32)
                .collect()
        } else {
            raw
        };
    Ok(Volume {
        dims,
        voxel_size,
        datatype,
        data,
        affine,
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
/// A NIfTI-1 single file (`n+1`) by hand: header fields at the offsets of
/// the NIfTI-1 standard, 4 bytes of empty extension, data at 352; no
/// orientation (see [`set_sform`]).
pub(crate) fn nifti_bytes(
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

/// Sets a little-endian header's sform (`sform_code` 2, aligned) for tests.
#[cfg(test)]
pub(crate) fn set_sform(bytes: &mut [u8], rows: [[f32; 4]; 3]) {
    bytes[254..256].copy_from_slice(&2i16.to_le_bytes());
    for (r, row) in rows.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            let at = 280 + 16 * r + 4 * c;
            bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Writes `bytes` gzipped to `path`, for tests.
#[cfg(test)]
pub(crate) fn write_gz(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn orientation_from_sform_qform_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.nii");
        let mut bytes = nifti_bytes(false, &[2, 2, 2], 2, 8, 0.0, 0.0, &[0; 8]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            read_nifti(&path).unwrap().affine,
            None,
            "no codes, no orientation"
        );
        // SPM's Ixi549Space grid: x from right to left.
        set_sform(
            &mut bytes,
            [
                [-1.5, 0.0, 0.0, 90.0],
                [0.0, 1.5, 0.0, -126.0],
                [0.0, 0.0, 1.5, -72.0],
            ],
        );
        std::fs::write(&path, &bytes).unwrap();
        let affine = read_nifti(&path).unwrap().affine.unwrap();
        assert_eq!(affine[0], [-1.5, 0.0, 0.0, 90.0]);
        assert_eq!(axis_codes(&affine), "LAS");
        let permuted = [
            [0.0, 0.0, -1.0, 0.0],
            [1.0, 0.1, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
        ];
        assert_eq!(axis_codes(&permuted), "ASL");
        assert_eq!(axis_codes(&[[0.0; 4]; 3]), "???");
        // A qform alone (method 2): the real OASIS T1's quaternion and qfac -1.
        let mut bytes = nifti_bytes(false, &[2, 2, 2], 2, 8, 0.0, 0.0, &[0; 8]);
        bytes[252..254].copy_from_slice(&1i16.to_le_bytes());
        bytes[76..80].copy_from_slice(&(-1.0f32).to_le_bytes());
        for (i, v) in [0.5f32, 0.5, 0.5, 80.0, -128.0, -128.0].iter().enumerate() {
            bytes[256 + 4 * i..260 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let affine = read_nifti(&path).unwrap().affine.unwrap();
        assert_eq!(axis_codes(&affine), "ASL");
        assert_eq!(
            affine[0],
            [0.0, 0.0, -1.5, 80.0],
            "qfac flips the third axis"
        );
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
        // FreeSurfer's conformed-like sagittal grid: the first voxel axis
        // points anterior, the second superior, the third to the left (its
        // qform, with qfac -1, says the same as its sform).
        let affine = volume.affine.unwrap();
        assert_eq!(axis_codes(&affine), "ASL");
        assert_eq!(affine[0], [0.0, 0.0, -1.0, 80.0]);
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
