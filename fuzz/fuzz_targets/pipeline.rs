//! Any bytes as a pipeline file: parsing and validation must return Ok or a
//! SpecError, never panic, hang or blow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("/nonexistent/fuzz.yaml");
        if let Ok(p) = hcpipe::spec::load::load_pipeline_text(text, path, "fuzz.yaml", &[]) {
            let _ = hcpipe::dag::Dag::build(p);
        }
    }
});
