//! The rate-limit class of each frame ([`crate::Request::kind`]); the limiter itself,
//! `RateLimiter`, is in `bulkhead-shared` (the launcher does not rate-limit).

/// Rate-limit classes: one per request method, plus the worker → controller frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum MethodKind {
    /// exec requests
    Exec,
    /// read requests
    Read,
    /// write requests
    Write,
    /// edit requests
    Edit,
    /// ls requests
    Ls,
    /// stat requests
    Stat,
    /// ping requests
    Ping,
    /// cancel frames
    Cancel,
    /// output frames from the worker
    Output,
    /// responses from the worker
    Response,
}
