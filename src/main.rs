//! The `evenkeel` binary: parse the command line, run the command, exit with its code.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    evenkeel::cli::main()
}
