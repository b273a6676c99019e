//! The `comfy-multi` binary; everything lives in the library (`cli`).

fn main() -> std::process::ExitCode {
    comfy_multi::cli::main()
}
