//! Build script: points the binary's rpath at the libtorch it was linked against (so it runs without
//! LD_LIBRARY_PATH) and compiles the C++ shim (shim/) for what tch does not expose.

use std::path::PathBuf;

fn libtorch_dir() -> PathBuf {
    let dir = std::env::var("LIBTORCH").unwrap_or_else(|_| "third_party/libtorch".to_string());
    let p = PathBuf::from(dir);
    let p = if p.is_absolute() { p } else { PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join(p) };
    p.canonicalize().unwrap_or(p)
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let torch = libtorch_dir();
    let lib = torch.join("lib");
    // Where the binary finds libtorch at run time: the build machine's copy first, then a `lib` folder
    // beside the binary (for shipping), then the PyPI torch of the GPU test machine's venv.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,/opt/torch/.venv/lib/python3.12/site-packages/torch/lib");
    // libtorch_cpu.so references CUDA symbols resolved only at run time on GPU machines.
    println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");

    // The shim: C++17 against the wheel's headers, same ABI flag as the wheel (CXX11 ABI = 1).
    println!("cargo:rerun-if-changed=shim/shim.cpp");
    let include = torch.join("include");
    cc::Build::new()
        .cpp(true)
        .file("shim/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        // No debug info: the shim is a few thin calls, and -g over the ATen headers triples its compile time.
        .debug(false)
        .compile("attnbench_shim");
    // The shim calls into libtorch / libc10 directly (tch links them too; be explicit).
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
