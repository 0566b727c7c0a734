//! The `bulkhead` CLI.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(bulkhead::cli::main());
}
