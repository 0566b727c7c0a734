//! Leaf helpers with no knowledge of the services above them: text made safe for a
//! terminal.

pub mod text;
