//! `bulkhead-launch`: the sandbox launcher. Everything is in the library (`src/lib.rs`), whose
//! documentation and docs/launcher-audit.md give the sequence it runs.

fn main() {
    bulkhead_launch::main()
}
