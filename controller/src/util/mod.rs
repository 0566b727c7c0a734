//! Leaf helpers with no knowledge of the services above them: text made safe for a
//! terminal, sizes, time, cancellation, the JSON Schema check of tool arguments.

pub mod cancel;
pub mod schema;
pub mod size;
pub mod text;
pub mod time;
