//! The `bulkhead` CLI.
#![forbid(unsafe_code)]

fn main() {
    // Before any thread or child: the same behaviour whatever SIGCHLD disposition and
    // signal mask the parent gave us (exec, run, skill run and serve all start children).
    if let Err(e) = bulkhead::sandbox::normalize_inherited_signals() {
        eprintln!("bulkhead: cannot reset the inherited signal state: {e}");
        std::process::exit(1);
    }
    std::process::exit(bulkhead::cli::main());
}
