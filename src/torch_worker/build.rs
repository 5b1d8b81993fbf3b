//! Link fixes for libtorch taken from a Python wheel (`LIBTORCH_USE_PYTORCH=1`).
//!
//! torch-sys (`links = "tch"`) exports the folder holding libtorch as
//! `DEP_TCH_LIBTORCH_LIB`. Its stock build leaves two traps, fixed here:
//! - no rpath: the binary would only start with `LD_LIBRARY_PATH` set, so we
//!   record the folder in the binary;
//! - the linker's `--as-needed` drops `libtorch_cuda.so`, because no symbol of
//!   it is referenced directly (CUDA kernels register themselves from static
//!   constructors), and CUDA then silently reads as unavailable. We link it
//!   with `--no-as-needed` when the wheel ships it (CPU wheels don't).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from);
    println!(
        "cargo:rustc-env=HCPIPE_LIBTORCH_VERSION={}",
        libtorch_version(lib.as_deref())
    );
    let Some(lib) = lib else {
        // torch-sys found libtorch some other way (e.g. a system install on
        // the loader path): nothing to add.
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB unset: no rpath added for libtorch");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// The version of the libtorch in `lib`: a wheel's `torch/version.py`
/// (`__version__ = '2.11.0+cu130'`) or a standalone libtorch's `build-version`.
/// libtorch has no runtime call for it, so it is baked in at build time.
fn libtorch_version(lib: Option<&Path>) -> String {
    let Some(root) = lib.and_then(Path::parent) else {
        return "unknown".to_string();
    };
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("version.py").display()
        );
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("__version__ = ") {
                return v.trim_matches(|c| c == '\'' || c == '"').to_string();
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        return text.trim().to_string();
    }
    "unknown".to_string()
}
