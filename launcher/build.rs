//! Generates the sandbox's seccomp programs at build time, from the reviewed tables in
//! `bulkhead-seccomp`, and writes them to `$OUT_DIR/seccomp.bpf` in the layout of
//! `bulkhead_seccomp::encode`. `src/seccomp.rs` embeds that file and installs it, so
//! the privileged launcher links neither the generator nor seccompiler; its unit test checks
//! the embedded bytes against a fresh `build_filters()`.
//!
//! Where no program can be built (no table for the target architecture, or a target other
//! than the architecture this script runs on: the tables use the build host's syscall
//! numbers), the file is empty and `$OUT_DIR/seccomp.why` says why: the launcher then refuses
//! every sandbox with that reason (fail closed), as it did when it built the programs at run
//! time. A bug in the generator fails the build.

use std::path::PathBuf;

use bulkhead_seccomp::{build_filters, encode, SeccompPolicyError};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let host = std::env::consts::ARCH;
    let target = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    // The whole target must be the host's kind: x32 (`x86_64-unknown-linux-gnux32`) has the
    // same architecture name but 32-bit pointers and other syscall numbers.
    let width = std::env::var("CARGO_CFG_TARGET_POINTER_WIDTH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let host_width = (usize::BITS).to_string();
    let (bytes, why) = if target != host || width != host_width || os != std::env::consts::OS {
        (
            Vec::new(),
            format!(
                "the seccomp programs were not generated: this launcher was cross-compiled for \
                 {target} ({os}, {width}-bit pointers) on {host}, and they are generated from the \
                 build host's syscall table; build bulkhead on {target}"
            ),
        )
    } else {
        match build_filters().and_then(|programs| encode(&programs)) {
            Ok(bytes) => (bytes, String::new()),
            Err(e @ SeccompPolicyError::UnsupportedArch(_)) => (Vec::new(), e.to_string()),
            Err(e) => panic!("{e}"),
        }
    };
    if !why.is_empty() {
        println!("cargo:warning={why}");
    }
    for (name, contents) in [("seccomp.bpf", bytes), ("seccomp.why", why.into_bytes())] {
        let path = out.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}
