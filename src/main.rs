#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    larder::cli::main()
}
