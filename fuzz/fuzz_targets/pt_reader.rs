//! Any bytes as a `.pt` file (and any bytes as its pickle): the reader must
//! return a tensor or an error, never panic, execute anything or over-allocate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hcpipe::artifact::pt::parse_tensor_pickle(data);
    let dir = std::env::temp_dir().join(format!("hcpipe-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("x.pt");
    if std::fs::write(&path, data).is_ok() {
        let _ = hcpipe::artifact::pt::read_f32(&path, &[1, 2, 3, 2]);
    }
});
