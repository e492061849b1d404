//! The `mcptap` binary: parse arguments, run, map the outcome to an exit code.

/// mimalloc instead of glibc malloc: the engine allocates on one worker thread and frees on
/// another (flows cross the event channel), which glibc serialises on arena locks; measured at
/// about a sixth of the proxy's CPU under load (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mcptap::main()
}
