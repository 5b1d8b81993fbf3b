//! 3-D volumes and the 2-D slices the report shows, indexed as the lab's
//! numpy/torch code indexes them.
//!
//! A [`Grid3`] is a volume of `dims[0] × dims[1] × dims[2]` voxels in either
//! memory order (torch tensors: last axis fastest; NIfTI: first axis
//! fastest), so `get(i, j, k)` is always the lab's `volume[i, j, k]`.
//! A [`Slice`] is the 2-D array `s[a, b]` a slice like `volume[60, :, :]`
//! gives; the figures show it as matplotlib's `imshow(s.T, origin="lower")`
//! does: `a` runs left to right, `b` bottom to top.

/// A 3-D volume, addressed in the lab's `[i, j, k]` order.
#[derive(Debug, Clone)]
pub struct Grid3 {
    pub dims: [usize; 3],
    strides: [usize; 3],
    data: Vec<f32>,
}

impl Grid3 {
    /// A volume stored last axis fastest (torch's and numpy's default).
    pub fn c_order(dims: [usize; 3], data: Vec<f32>) -> Result<Grid3, String> {
        Self::new(dims, [dims[1] * dims[2], dims[2], 1], data)
    }

    /// A volume stored first axis fastest (NIfTI's voxel order).
    pub fn fortran_order(dims: [usize; 3], data: Vec<f32>) -> Result<Grid3, String> {
        Self::new(dims, [1, dims[0], dims[0] * dims[1]], data)
    }

    fn new(dims: [usize; 3], strides: [usize; 3], data: Vec<f32>) -> Result<Grid3, String> {
        let n: usize = dims.iter().product();
        if n == 0 || data.len() != n {
            return Err(format!(
                "{} values for a {}×{}×{} volume of {n}",
                data.len(),
                dims[0],
                dims[1],
                dims[2]
            ));
        }
        Ok(Grid3 {
            dims,
            strides,
            data,
        })
    }

    /// `volume[i, j, k]`, or `None` outside the grid.
    pub fn get(&self, i: usize, j: usize, k: usize) -> Option<f32> {
        let [a, b, c] = self.dims;
        if i >= a || j >= b || k >= c {
            return None;
        }
        let [s0, s1, s2] = self.strides;
        self.data.get(i * s0 + j * s1 + k * s2).copied()
    }

    /// The slice at `index` along `axis` (0, 1 or 2): `volume[index, :, :]`,
    /// `volume[:, index, :]` or `volume[:, :, index]`, the two remaining axes
    /// in order. `None` when `axis` or `index` is outside the grid.
    pub fn slice(&self, axis: usize, index: usize) -> Option<Slice> {
        let n = *self.dims.get(axis)?;
        if index >= n {
            return None;
        }
        let (ra, rb) = match axis {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        let (n0, n1) = (self.dims[ra], self.dims[rb]);
        let mut values = Vec::with_capacity(n0 * n1);
        for a in 0..n0 {
            for b in 0..n1 {
                let mut at = [0usize; 3];
                at[axis] = index;
                at[ra] = a;
                at[rb] = b;
                values.push(self.get(at[0], at[1], at[2])?);
            }
        }
        Some(Slice {
            shape: (n0, n1),
            values,
        })
    }

    /// The sub-volume `volume[x0:x1, y0:y1, z0:z1]` (half-open ranges, as a
    /// Python slice), or `None` when the box leaves the grid or is empty.
    pub fn crop(&self, bounds: [(usize, usize); 3]) -> Option<Grid3> {
        for (&(lo, hi), &n) in bounds.iter().zip(&self.dims) {
            if lo >= hi || hi > n {
                return None;
            }
        }
        let dims = bounds.map(|(lo, hi)| hi - lo);
        let mut data = Vec::with_capacity(dims.iter().product());
        for i in bounds[0].0..bounds[0].1 {
            for j in bounds[1].0..bounds[1].1 {
                for k in bounds[2].0..bounds[2].1 {
                    data.push(self.get(i, j, k)?);
                }
            }
        }
        Grid3::c_order(dims, data).ok()
    }
}

/// A 2-D array `s[a, b]` of shape `(n0, n1)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub shape: (usize, usize),
    /// `s[a, b]` at `a * n1 + b`.
    values: Vec<f32>,
}

impl Slice {
    pub fn new(shape: (usize, usize), values: Vec<f32>) -> Option<Slice> {
        (shape.0 > 0 && shape.1 > 0 && values.len() == shape.0 * shape.1)
            .then_some(Slice { shape, values })
    }

    /// `s[a, b]`, or `None` outside.
    pub fn get(&self, a: usize, b: usize) -> Option<f32> {
        if a >= self.shape.0 || b >= self.shape.1 {
            return None;
        }
        self.values.get(a * self.shape.1 + b).copied()
    }

    /// `np.rot90(s)`, which is what the lab's `scipy.ndimage.rotate(s, 90)`
    /// gives for a quarter turn: `r[i, j] = s[j, n1 - 1 - i]`, shape `(n1, n0)`.
    pub fn rot90(&self) -> Slice {
        let (n0, n1) = self.shape;
        let mut values = Vec::with_capacity(n0 * n1);
        for i in 0..n1 {
            for j in 0..n0 {
                values.push(self.get(j, n1 - 1 - i).unwrap_or(f32::NAN));
            }
        }
        Slice {
            shape: (n1, n0),
            values,
        }
    }

    /// The smallest and largest finite values (matplotlib's default grey
    /// scale limits), or `None` when no value is finite.
    pub fn range(&self) -> Option<(f32, f32)> {
        let mut finite = self.values.iter().copied().filter(|v| v.is_finite());
        let first = finite.next()?;
        Some(finite.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// value = 100 i + 10 j + k, so every voxel says where it came from.
    fn coded(dims: [usize; 3]) -> (Vec<f32>, Vec<f32>) {
        let mut c = Vec::new();
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    c.push((100 * i + 10 * j + k) as f32);
                }
            }
        }
        let mut f = Vec::new();
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    f.push((100 * i + 10 * j + k) as f32);
                }
            }
        }
        (c, f)
    }

    #[test]
    fn both_memory_orders_index_like_numpy() {
        let dims = [3, 4, 5];
        let (c, f) = coded(dims);
        let a = Grid3::c_order(dims, c).unwrap();
        let b = Grid3::fortran_order(dims, f).unwrap();
        for (i, j, k) in [(0, 0, 0), (2, 3, 4), (1, 2, 3), (2, 0, 4)] {
            let want = (100 * i + 10 * j + k) as f32;
            assert_eq!(a.get(i, j, k), Some(want));
            assert_eq!(b.get(i, j, k), Some(want));
        }
        assert_eq!(a.get(3, 0, 0), None);
        assert!(Grid3::c_order(dims, vec![0.0; 59]).is_err());
    }

    #[test]
    fn slices_keep_the_remaining_axes_in_order() {
        let dims = [3, 4, 5];
        let g = Grid3::c_order(dims, coded(dims).0).unwrap();
        let s0 = g.slice(0, 2).unwrap(); // g[2, :, :]
        assert_eq!(s0.shape, (4, 5));
        assert_eq!(s0.get(3, 1), Some(231.0));
        let s1 = g.slice(1, 1).unwrap(); // g[:, 1, :]
        assert_eq!(s1.shape, (3, 5));
        assert_eq!(s1.get(2, 4), Some(214.0));
        let s2 = g.slice(2, 4).unwrap(); // g[:, :, 4]
        assert_eq!(s2.shape, (3, 4));
        assert_eq!(s2.get(1, 3), Some(134.0));
        assert!(g.slice(2, 5).is_none());
        assert!(g.slice(3, 0).is_none());
    }

    #[test]
    fn the_real_preprocessed_shape_slices_as_the_lab_does() {
        let dims = [121, 145, 121];
        let n = dims.iter().product::<usize>();
        let g = Grid3::c_order(dims, (0..n).map(|v| v as f32).collect()).unwrap();
        // The lab's [0,60,:,:], [0,:,72,:], [0,:,:,60].
        let s = g.slice(0, 60).unwrap();
        assert_eq!(s.shape, (145, 121));
        assert_eq!(
            s.get(144, 120),
            Some((60 * 145 * 121 + 144 * 121 + 120) as f32)
        );
        assert_eq!(g.slice(1, 72).unwrap().shape, (121, 121));
        assert_eq!(g.slice(2, 60).unwrap().shape, (121, 145));
    }

    #[test]
    fn crops_are_python_slices() {
        let dims = [6, 7, 8];
        let g = Grid3::c_order(dims, coded(dims).0).unwrap();
        let c = g.crop([(1, 4), (2, 7), (3, 5)]).unwrap();
        assert_eq!(c.dims, [3, 5, 2]);
        assert_eq!(c.get(0, 0, 0), Some(123.0));
        assert_eq!(c.get(2, 4, 1), Some(364.0));
        assert!(g.crop([(1, 4), (2, 8), (3, 5)]).is_none());
        assert!(g.crop([(4, 4), (2, 7), (3, 5)]).is_none());
    }

    #[test]
    fn rot90_matches_numpy() {
        // np.rot90([[0, 1, 2], [3, 4, 5]]) == [[2, 5], [1, 4], [0, 3]]
        let s = Slice::new((2, 3), vec![0., 1., 2., 3., 4., 5.]).unwrap();
        let r = s.rot90();
        assert_eq!(r, Slice::new((3, 2), vec![2., 5., 1., 4., 0., 3.]).unwrap());
        assert_eq!(s.range(), Some((0.0, 5.0)));
        let nan = Slice::new((1, 2), vec![f32::NAN, f32::NAN]).unwrap();
        assert_eq!(nan.range(), None);
    }
}
