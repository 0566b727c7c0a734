//! One integration-test binary for the worker: `bulkhead-worker` driven over its socket.
mod suite;
