//! Compiles the BPF programs in `src/bpf/` with clang and generates their libbpf-rs
//! skeletons (`$OUT_DIR/<name>.skel.rs`, included by `src/sys.rs`): `steer`, the XDP
//! steering program, and `impair`, the test bed's loss emulation.

use std::env;
use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

const PROGRAMS: [&str; 2] = ["steer", "impair"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    let mut args = Vec::new();
    // `linux/types.h` includes `asm/types.h`, which Debian-like systems keep in the
    // multiarch directory; clang targeting BPF does not look there by itself.
    let multiarch = multiarch_include();
    if multiarch.is_dir() {
        args.push(format!("-I{}", multiarch.display()));
    }
    args.extend(["-Wall".to_owned(), "-Werror".to_owned()]);

    for name in PROGRAMS {
        let src = format!("src/bpf/{name}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let result = SkeletonBuilder::new()
            .source(&src)
            .clang_args(&args)
            .build_and_generate(out.join(format!("{name}.skel.rs")));
        if let Err(err) = result {
            panic!(
                "building the BPF program {src} failed: {err:#}\n\
                 It needs clang, llvm and the kernel headers (linux-libc-dev): run scripts/bootstrap"
            );
        }
    }
}

/// `/usr/include/<multiarch triple>` for the target being built.
fn multiarch_include() -> PathBuf {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").unwrap_or_default();
    let triple = match (arch.as_str(), endian.as_str()) {
        ("x86", _) => "i386-linux-gnu".to_owned(),
        ("arm", _) => "arm-linux-gnueabihf".to_owned(),
        ("powerpc64", "little") => "powerpc64le-linux-gnu".to_owned(),
        ("mips64", "little") => "mips64el-linux-gnuabi64".to_owned(),
        ("mips64", _) => "mips64-linux-gnuabi64".to_owned(),
        ("loongarch64", _) => "loongarch64-linux-gnu".to_owned(),
        (arch, _) => format!("{arch}-linux-gnu"),
    };
    Path::new("/usr/include").join(triple)
}
