//! The `reklama` binary: everything lives in the library; see `main_app`.

fn main() -> std::process::ExitCode {
    reklama::main_app::cli::main()
}
