//! Links the `mcptap` binary with packed relative relocations (`DT_RELR`) where the linker and
//! the C library support them.
//!
//! A position-independent executable carries one 24-byte `R_X86_64_RELATIVE` entry for every
//! pointer in its read-only data (vtables, string tables): ~32,000 entries, 780 KB, which the
//! dynamic loader reads at every start and which then stay resident. `DT_RELR` packs them into
//! a bitmap of a few KB (glibc ≥ 2.36, GNU ld ≥ 2.38, lld ≥ 15, mold); the idle proxy is ~1 MB
//! smaller (docs/benchmarks.md). The flag is only passed after a probe program linked with it
//! runs here, so an older toolchain or C library links as before. `MCPTAP_NO_RELR=1` turns it
//! off.

use std::env;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[path = "relr.rs"]
mod relr;

const FLAG: &str = "-Wl,-z,pack-relative-relocs";

fn main() {
    println!("cargo:rerun-if-changed=crates/cli/build.rs");
    println!("cargo:rerun-if-changed=crates/cli/relr.rs");
    for var in ["MCPTAP_NO_RELR", "CC", "RUSTC_LINKER"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let verdict = if env::var_os("MCPTAP_NO_RELR").is_some() {
        Err("MCPTAP_NO_RELR is set")
    } else {
        probe()
    };
    match verdict {
        Ok(()) => {
            println!("cargo:rustc-link-arg-bins={FLAG}");
            println!("cargo:rustc-env=MCPTAP_RELR=packed");
        }
        Err(why) => println!("cargo:rustc-env=MCPTAP_RELR=not packed: {why}"),
    }
}

/// Links and runs a tiny program with the flag, with the linker driver rustc will use.
fn probe() -> Result<(), &'static str> {
    let target = env::var("TARGET").unwrap_or_default();
    let host = env::var("HOST").unwrap_or_default();
    if target != host {
        return Err("cross-compiling: the probe cannot run");
    }
    let known = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];
    if !known.contains(&target.as_str()) {
        return Err("not a glibc Linux target on x86_64 or aarch64");
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("no OUT_DIR")?);
    let src = out.join("relr_probe.c");
    let exe = out.join("relr_probe");
    std::fs::write(&src, "int main(void) { return 0; }\n").map_err(|_| "cannot write the probe")?;
    let driver = env::var("RUSTC_LINKER")
        .or_else(|_| env::var("CC"))
        .unwrap_or_else(|_| "cc".to_owned());
    let linked = quiet(
        Command::new(driver)
            .args(["-pie", "-fPIE", FLAG, "-o"])
            .arg(&exe)
            .arg(&src),
    );
    if !linked {
        return Err("the linker refused -z pack-relative-relocs");
    }
    if !quiet(&mut Command::new(&exe)) {
        return Err("a program linked with it does not run here (glibc older than 2.36?)");
    }
    if !std::fs::read(&exe).is_ok_and(|elf| relr::has_relr(&elf)) {
        return Err("the linker ignored it (glibc older than 2.36?)");
    }
    Ok(())
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
