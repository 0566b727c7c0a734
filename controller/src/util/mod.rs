//! Leaf helpers with no knowledge of the services above them: text made safe for a
//! terminal, byte encodings, and time formats.

pub mod encoding;
pub mod text;
pub mod time;
