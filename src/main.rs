#![forbid(unsafe_code)]
//! The `gateway` binary: parses flags and hands over to the library.

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
