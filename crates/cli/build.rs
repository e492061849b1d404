//! Two link settings for the `mcptap` binary, each passed only after a probe shows this
//! toolchain takes it, so any other toolchain links as before.
//!
//! **Packed relative relocations** (`DT_RELR`). A position-independent executable carries one
//! 24-byte `R_X86_64_RELATIVE` entry for every pointer in its read-only data (vtables, string
//! tables): ~32,000 entries, 780 KB, which the dynamic loader reads at every start and which
//! then stay resident. `DT_RELR` packs them into a bitmap of a few KB (glibc ≥ 2.36, GNU ld ≥
//! 2.38, lld ≥ 15, mold); the idle proxy is ~1 MB smaller (docs/benchmarks.md). Probed by
//! linking and running a C program. `MCPTAP_NO_RELR=1` turns it off.
//!
//! **Start-up code together** (`--symbol-ordering-file`, lld and mold). The kernel maps a
//! binary's code 64 KB around each page a process touches, so the few hundred KB of functions
//! the proxy runs when it starts, scattered over 10 MB of code, kept ~6.5 MB of it resident.
//! `crates/cli/link-order.txt` (made by `scripts/link-order.sh`) lists those functions, then
//! the ones serving traffic runs, and the linker places them first, in that order: the idle
//! proxy is ~5 MB smaller (docs/benchmarks.md). Names the list has and the binary does not
//! (another toolchain, changed code) are skipped, so a stale list costs only memory. Probed by
//! linking a Rust program with the flag as this build's `rustc` links. `MCPTAP_NO_LINK_ORDER=1`
//! turns it off.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "relr.rs"]
mod relr;

const FLAG: &str = "-Wl,-z,pack-relative-relocs";
/// The functions to place first, relative to the package root.
const ORDER_FILE: &str = "crates/cli/link-order.txt";

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

    println!("cargo:rerun-if-changed={ORDER_FILE}");
    for var in ["MCPTAP_NO_LINK_ORDER", "CARGO_ENCODED_RUSTFLAGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let verdict = if env::var_os("MCPTAP_NO_LINK_ORDER").is_some() {
        Err("MCPTAP_NO_LINK_ORDER is set")
    } else {
        probe_order(&root.join(ORDER_FILE))
    };
    match verdict {
        Ok(args) => {
            for arg in args {
                println!("cargo:rustc-link-arg-bins={arg}");
            }
            println!("cargo:rustc-env=MCPTAP_LINK_ORDER=ordered");
        }
        Err(why) => println!("cargo:rustc-env=MCPTAP_LINK_ORDER=not ordered: {why}"),
    }
}

/// The linker arguments that place the listed functions first, if a program linked with them
/// by this build's `rustc` (its target, flags and linker) links.
fn probe_order(list: &Path) -> Result<[String; 2], &'static str> {
    if !list.is_file() {
        return Err("no crates/cli/link-order.txt");
    }
    let path = list.to_str().ok_or("the list's path is not UTF-8")?;
    if path.contains(',') {
        return Err("the list's path has a comma, which -Wl would split");
    }
    let args = [
        format!("-Wl,--symbol-ordering-file={path}"),
        "-Wl,--no-warn-symbol-ordering".to_owned(),
    ];
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("no OUT_DIR")?);
    let src = out.join("order_probe.rs");
    std::fs::write(&src, "fn main() {}\n").map_err(|_| "cannot write the probe")?;
    let mut rustc = Command::new(env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
    rustc
        .arg("--target")
        .arg(env::var("TARGET").unwrap_or_default());
    rustc.arg("-o").arg(out.join("order_probe")).arg(&src);
    if let Ok(flags) = env::var("CARGO_ENCODED_RUSTFLAGS") {
        rustc.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    if let Ok(linker) = env::var("RUSTC_LINKER") {
        rustc.arg("-C").arg(format!("linker={linker}"));
    }
    for arg in &args {
        rustc.arg("-C").arg(format!("link-arg={arg}"));
    }
    if !quiet(&mut rustc) {
        return Err("the linker refused --symbol-ordering-file (lld and mold take it)");
    }
    Ok(args)
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
