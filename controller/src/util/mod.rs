//! Leaf helpers with no knowledge of the services above them: text made safe for a
//! terminal, and byte encodings.

pub mod encoding;
pub mod text;
