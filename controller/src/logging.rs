//! Logging setup: `BULKHEAD_LOG_LEVEL` (default `warn`).

/// Initializes `env_logger` once; later calls do nothing.
pub fn init() {
    let level = std::env::var("BULKHEAD_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
    let _ = env_logger::Builder::new()
        .parse_filters(&level)
        .format_timestamp_millis()
        .try_init();
}
