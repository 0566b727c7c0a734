//! Approximate list prices of some models, to report a run's cost when it is known.
//!
//! USD per million tokens (input, output), standard tier, no caching or batch discounts,
//! as published by the providers in 2025. Matched by model-name prefix, longest first; a
//! model not listed has no cost (usage is still counted). Local servers cost nothing here
//! either way: their models are not listed.

/// `(model prefix, input $/Mtok, output $/Mtok)`.
pub const PRICES: &[(&str, f64, f64)] = &[
    ("claude-opus-4", 15.0, 75.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-haiku-4-5", 1.0, 5.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4.1-nano", 0.1, 0.4),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-5-nano", 0.05, 0.4),
    ("gpt-5-mini", 0.25, 2.0),
    ("gpt-5", 1.25, 10.0),
    ("o3-mini", 1.1, 4.4),
    ("o4-mini", 1.1, 4.4),
    ("o3", 2.0, 8.0),
    ("gemini-2.5-flash-lite", 0.1, 0.4),
    ("gemini-2.5-flash", 0.3, 2.5),
    ("gemini-2.5-pro", 1.25, 10.0),
    ("gemini-2.0-flash", 0.1, 0.4),
];

/// The cost of `input`/`output` tokens of `model` (a provider's model id), if its price is
/// known.
pub fn cost_usd(model: &str, input: u64, output: u64) -> Option<f64> {
    let m = model.to_ascii_lowercase();
    let m = m.rsplit('/').next().unwrap_or(&m);
    let (_, i, o) = PRICES
        .iter()
        .filter(|(p, _, _)| m.starts_with(p))
        .max_by_key(|(p, _, _)| p.len())?;
    Some((input as f64 * i + output as f64 * o) / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let c = cost_usd("gpt-4o-mini-2024-07-18", 1_000_000, 1_000_000).unwrap();
        assert!((c - 0.75).abs() < 1e-9);
        let c = cost_usd("claude-sonnet-4-5", 1000, 100).unwrap();
        assert!((c - (0.003 + 0.0015)).abs() < 1e-9);
        assert_eq!(cost_usd("llama3.2", 10, 10), None);
        assert!(cost_usd("openrouter/anthropic/claude-sonnet-4", 1, 1).is_some());
    }
}
