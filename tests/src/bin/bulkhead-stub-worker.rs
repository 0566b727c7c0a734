//! `bulkhead-stub-worker`: a worker that completes the handshake and then never answers.
//!
//! Test-only (it lives in the tests crate, never in a package). It stands in for a stalled or
//! compromised `bulkhead-worker`: the deadline tests copy `bulkhead-launch` into a directory
//! of their own, put this binary beside it as `bulkhead-worker` (the launcher runs the worker
//! next to its own executable) and point `BULKHEAD_LAUNCH` at the copy.
//!
//! Run by the launcher as pid 1 of a real sandbox, it reads its attestation with the real
//! worker's code (so the controller's checks pass only inside a real sandbox), sends
//! `Hello`, then reads and drops every frame, answering none, until the controller closes
//! the connection or the sandbox is killed. When the workspace holds a file named
//! `stub-ignores-eof` (written by the test on the host), it does not exit at end of file
//! either: only killing the sandbox ends it.

// The real worker's modules, compiled in as they are; only some of their functions are used.
#[allow(dead_code)]
#[path = "../../../worker/src/attest.rs"]
mod attest;
#[allow(dead_code)]
#[path = "../../../worker/src/sys.rs"]
mod sys;

use std::io::Read;
use std::process::ExitCode;

use bulkhead_shared::WorkerEnd;

/// The fd the launcher leaves the controller socket on.
const SOCKET_FD: i32 = 3;

fn main() -> ExitCode {
    let sock = match sys::take_unix_stream(SOCKET_FD) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bulkhead-stub-worker: no controller socket on fd {SOCKET_FD}: {e}");
            return ExitCode::from(1);
        }
    };
    let mut reader = match sock.try_clone() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bulkhead-stub-worker: {e}");
            return ExitCode::from(1);
        }
    };
    let mut end = WorkerEnd::new(sock);
    if let Err(e) = end.hello(attest::gather()) {
        eprintln!("bulkhead-stub-worker: sending hello: {e}");
        return ExitCode::from(1);
    }
    // Swallow whatever comes (requests, cancels, shutdown) so the controller's writes never
    // block on a full socket: only the missing answers stall it.
    let mut buf = [0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if std::path::Path::new("/workspace/stub-ignores-eof").exists() {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    ExitCode::SUCCESS
}
