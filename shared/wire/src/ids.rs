//! Identifier validation shared by every component.

use std::fmt;

/// Longest workspace id (`[a-z0-9][a-z0-9_-]{0,62}`).
pub const MAX_WORKSPACE_ID_LEN: usize = 63;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    /// The id as given (truncated for display).
    pub id: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid workspace id {:?}: {}; ids match [a-z0-9][a-z0-9_-]{{0,62}}",
            self.id, self.reason
        )
    }
}

impl std::error::Error for IdError {}

/// Checks a workspace id: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn validate_workspace_id(id: &str) -> Result<(), IdError> {
    let err = |reason| {
        let shown: String = id.chars().take(80).collect();
        Err(IdError { id: shown, reason })
    };
    let bytes = id.as_bytes();
    let Some(&first) = bytes.first() else {
        return err("it is empty");
    };
    if bytes.len() > MAX_WORKSPACE_ID_LEN {
        return err("it is longer than 63 characters");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return err("it must start with a lowercase letter or a digit");
    }
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return err("only lowercase letters, digits, '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        for id in ["a", "0", "acme-corp", "team_7", &"a".repeat(63)] {
            assert!(validate_workspace_id(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn refuses_invalid_ids() {
        for id in [
            "",
            "-a",
            "_a",
            "A",
            "a/b",
            "..",
            ".",
            "a b",
            "a\0",
            "é",
            "a.b",
            &"a".repeat(64),
        ] {
            let e = validate_workspace_id(id).unwrap_err();
            assert!(e.to_string().contains("[a-z0-9]"), "{e}");
        }
    }
}
