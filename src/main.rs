//! The `evenkeel` binary: parse the command line, run the command, exit with its code.

/// mimalloc instead of the system allocator: a proxied request makes about ten small
/// allocations (header maps, shared head buffers, the read buffer), and glibc's
/// malloc/free were 12% of its instructions (callgrind; see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    evenkeel::cli::main()
}
