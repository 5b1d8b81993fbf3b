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
//!
//! It also compiles `csrc/fast_step.cpp` (fused Adam and CUDA graphs, which
//! tch does not bind) with the cc crate, the way torch-sys compiles its glue:
//! against the headers beside that libtorch, with CUDA support only when the
//! wheel ships libtorch_cuda and the CUDA runtime headers are found.

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
        // the loader path): we cannot find its headers for the shim.
        panic!(
            "DEP_TCH_LIBTORCH_LIB is unset: build with LIBTORCH_USE_PYTORCH=1 and the \
             repository's .venv first on PATH (`make build` does both)"
        );
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let cuda = lib.join("libtorch_cuda.so").exists();
    let cuda_headers = if cuda {
        cuda_runtime_include(&lib)
    } else {
        None
    };
    compile_shim(&lib, cuda_headers.as_deref());
    if cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-lc10_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// Compiles `csrc/fast_step.cpp` into a static library linked into the worker.
fn compile_shim(lib: &Path, cuda_headers: Option<&Path>) {
    const SOURCE: &str = "csrc/fast_step.cpp";
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let include = lib.parent().map(|torch| torch.join("include"));
    let include = include
        .filter(|i| i.join("ATen/ATen.h").exists())
        .unwrap_or_else(|| {
            panic!(
                "no libtorch headers (include/ATen/ATen.h) beside {}; use a torch wheel or a \
             libtorch archive that ships its headers",
                lib.display()
            )
        });
    // torch wheels since 2.7 use the C++11 ABI; torch-sys reads the same variable.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file(SOURCE)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false);
    match cuda_headers {
        Some(dir) => {
            build.include(dir).define("HCPIPE_WITH_CUDA", None);
        }
        None => println!(
            "cargo:warning=building the fast-step shim without CUDA graphs (no libtorch_cuda \
             or no cuda_runtime_api.h); GPU training will use eager steps"
        ),
    }
    build.compile("hcpipe_fast_step");
}

/// A folder holding the CUDA runtime headers (`cuda_runtime_api.h` and the
/// `crt/` folder it includes): the wheel's `nvidia/<cu*>/include` (pip's CUDA
/// runtime package, which lacks `crt/` in CUDA 13), triton's copy (a
/// dependency of every CUDA torch wheel), `$CUDA_HOME/include`, /usr/local/cuda.
fn cuda_runtime_include(lib: &Path) -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let mut candidates = Vec::new();
    if let Some(site) = lib.parent().and_then(Path::parent) {
        if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
            let mut dirs: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join("include"))
                .collect();
            dirs.sort();
            candidates.extend(dirs);
            candidates.push(site.join("nvidia/cuda_runtime/include"));
        }
        candidates.push(site.join("triton/backends/nvidia/include"));
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        candidates.push(PathBuf::from(home).join("include"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    candidates.into_iter().find(|dir| {
        dir.join("cuda_runtime_api.h").exists() && dir.join("crt/host_config.h").exists()
    })
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
