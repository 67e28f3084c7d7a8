#![forbid(unsafe_code)]

// The serving path allocates many small, short-lived buffers per request;
// mimalloc serves them markedly faster than the system allocator (see
// docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    larder::cli::main()
}
