//! With the `cuda` feature, compiles the custom-op kernels `src/ops/cuda/kernels/<name>.cu` to
//! PTX in `OUT_DIR/<name>.ptx` (embedded by `src/ops/cuda/mod.rs`). Without it, does nothing:
//! CPU builds never need nvcc.
//!
//! nvcc is `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else `nvcc` on the `PATH`. The PTX targets the
//! virtual architecture `compute_$CUDA_COMPUTE_CAP` (default 90, H100/H200): PTX for
//! `compute_90` is JIT-compiled by the driver on any GPU of compute capability 9.0 or newer,
//! unlike a cubin or an `sm_90a` target, which only run on 9.0. The driver must be able to JIT
//! the PTX ISA version the nvcc in use emits (see README, "CUDA build").

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Kernel sources, one per op family, compiled to one PTX module each.
const KERNELS: [&str; 6] = [
    "rms_norm",
    "rope",
    "softmax",
    "attention",
    "selective_log_softmax",
    "grpo_loss",
];

/// Directory of the `.cu` files and of the header they share.
const KERNEL_DIR: &str = "src/ops/cuda/kernels";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={KERNEL_DIR}/common.cuh");
    for name in KERNELS {
        println!("cargo:rerun-if-changed={KERNEL_DIR}/{name}.cu");
    }
    for var in ["NVCC", "CUDA_HOME", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = nvcc_path();
    let arch = format!("-arch=compute_{}", compute_cap());
    // All files at once: nvcc is single-threaded per file.
    let jobs: Vec<(&str, Child)> = KERNELS
        .iter()
        .map(|&name| (name, spawn_nvcc(&nvcc, &arch, name, &out_dir)))
        .collect();
    for (name, child) in jobs {
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for nvcc on {name}.cu: {e}"));
        if !output.status.success() {
            panic!(
                "nvcc failed on {KERNEL_DIR}/{name}.cu ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else `nvcc`.
fn nvcc_path() -> PathBuf {
    if let Some(nvcc) = env::var_os("NVCC") {
        return PathBuf::from(nvcc);
    }
    if let Some(home) = env::var_os("CUDA_HOME") {
        return Path::new(&home).join("bin").join("nvcc");
    }
    PathBuf::from("nvcc")
}

/// The digits of `$CUDA_COMPUTE_CAP` ("90", "9.0" and "90a" all give "90"), default "90".
fn compute_cap() -> String {
    let cap: String = env::var("CUDA_COMPUTE_CAP")
        .unwrap_or_else(|_| "90".into())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    if cap.is_empty() {
        panic!("CUDA_COMPUTE_CAP must name a compute capability such as 90 (H100/H200)");
    }
    cap
}

fn spawn_nvcc(nvcc: &Path, arch: &str, name: &str, out_dir: &Path) -> Child {
    Command::new(nvcc)
        .args(["-ptx", "-O3", "-std=c++17", arch, "-o"])
        .arg(out_dir.join(format!("{name}.ptx")))
        .arg(format!("{KERNEL_DIR}/{name}.cu"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "the `cuda` feature compiles {KERNEL_DIR}/*.cu with nvcc, but `{}` could not be \
                 run: {e}. Set NVCC to the nvcc binary or CUDA_HOME to the CUDA toolkit root \
                 (see README.md, \"CUDA build\"), or build without `--features cuda`.",
                nvcc.display()
            )
        })
}
