//! Leaf helpers with no knowledge of the services above them: text made safe for a
//! terminal, byte encodings, time formats, byte sizes, cancellation, the JSON Schema check of
//! tool arguments.

pub mod cancel;
pub mod encoding;
pub mod schema;
pub mod text;
pub mod time;

/// Byte sizes (`512M`, `1.5G`): the one parser and formatter, shared with the launcher's
/// policy (`launch.toml`).
pub use bulkhead_policy::size::{human_size, parse_size};
