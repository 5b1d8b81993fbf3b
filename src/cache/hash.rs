//! Content hashing with blake3.
//!
//! Large files are memory-mapped and hashed with blake3's rayon-parallel
//! tree mode; small ones are read into memory (mmap setup costs more than it
//! saves below a few MiB).

use std::io::Read;
use std::path::Path;

/// Above this size a file is mmapped and hashed on every core.
const MMAP_THRESHOLD: u64 = 8 * 1024 * 1024;

pub fn hash_file(path: &Path) -> std::io::Result<blake3::Hash> {
    let len = std::fs::metadata(path)?.len();
    let mut hasher = blake3::Hasher::new();
    if len >= MMAP_THRESHOLD {
        hasher.update_mmap_rayon(path)?;
    } else {
        let mut buf = Vec::with_capacity(len as usize);
        std::fs::File::open(path)?.read_to_end(&mut buf)?;
        hasher.update(&buf);
    }
    Ok(hasher.finalize())
}

/// Hash bytes already in memory.
pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}
