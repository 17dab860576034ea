//! The `flamingock` command line; see the `flamingock_cli` crate docs.

fn main() -> std::process::ExitCode {
    flamingock_cli::standalone::main()
}
