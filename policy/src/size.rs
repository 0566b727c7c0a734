//! Byte sizes as people write them: `1048576`, `512M`, `1.5G`, `4k`, `100B`. The one parser
//! (the CLI's `--memory`, `config.toml`, a skill's `limits.memory`, `launch.toml`'s ceilings)
//! and the one formatter.

/// The suffixes [`parse_size`] knows, as powers of 1024 (case-insensitive; `B` is bytes).
const SUFFIXES: [(u8, u64); 5] = [
    (b'B', 1),
    (b'K', 1 << 10),
    (b'M', 1 << 20),
    (b'G', 1 << 30),
    (b'T', 1 << 40),
];

/// Most digits after the decimal point (more say nothing about a byte count).
const MAX_FRACTION_DIGITS: usize = 18;

fn not_a_size(s: &str) -> String {
    format!(
        "{s:?} is not a size: use a number with an optional K, M, G or T suffix \
         (examples: 512M, 1.5G, 1048576)"
    )
}

/// Parses `512M`, `1.5G`, `1024K`, `100000` into bytes (K, M, G, T are powers of 1024; a
/// fraction of a byte is dropped). Refuses signs, exponents, empty numbers and sizes past
/// `u64::MAX` bytes, with an error that says how to write one.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.as_bytes().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let upper = c.to_ascii_uppercase();
            let Some(&(_, m)) = SUFFIXES.iter().find(|(k, _)| *k == upper) else {
                return Err(not_a_size(s));
            };
            (t[..t.len() - 1].trim_end(), m)
        }
        _ => (t, 1),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() && frac.is_empty()
        || !digits(int)
        || !digits(frac)
        || frac.len() > MAX_FRACTION_DIGITS
    {
        return Err(not_a_size(s));
    }
    let too_large = || format!("{s:?} is too large: a size is at most {} bytes", u64::MAX);
    let whole: u128 = if int.is_empty() {
        0
    } else {
        // 20 digits hold any u64; a longer number is too large whatever its suffix.
        if int.trim_start_matches('0').len() > 20 {
            return Err(too_large());
        }
        int.parse().map_err(|_| not_a_size(s))?
    };
    let part: u128 = if frac.is_empty() {
        0
    } else {
        let scale = 10u128.pow(frac.len() as u32);
        let f: u128 = frac.parse().map_err(|_| not_a_size(s))?;
        f * u128::from(mult) / scale
    };
    whole
        .checked_mul(u128::from(mult))
        .and_then(|w| w.checked_add(part))
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(too_large)
}

/// `n` bytes for a person: `512 B`, `1.5 KiB`, `256.0 MiB`, `2.0 TiB` (one decimal).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_suffixes_and_fractions() {
        for (text, want) in [
            ("0", 0),
            ("100000", 100_000),
            ("1048576", 1 << 20),
            ("512M", 512 << 20),
            ("512m", 512 << 20),
            ("1G", 1 << 30),
            ("1024K", 1 << 20),
            ("2T", 2 << 40),
            ("100B", 100),
            (" 64M ", 64 << 20),
            ("64 M", 64 << 20),
            ("1.5G", 3 << 29),
            ("0.5K", 512),
            (".5K", 512),
            ("2.K", 2048),
            ("1.0001K", 1024),
            ("1.5", 1),
            ("18446744073709551615", u64::MAX),
            ("00000000000000000000001K", 1024),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn what_is_not_a_size_says_how_to_write_one() {
        for bad in [
            "",
            " ",
            "lots",
            "M",
            ".",
            "-1",
            "+1",
            "1e3",
            "1X",
            "1.5.5G",
            "1,5G",
            "NaN",
            "inf",
            "0x10",
            "1 000",
            "1.0000000000000000001G",
            "１G",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(
                e.contains("is not a size") && e.contains("512M"),
                "{bad:?}: {e}"
            );
        }
        for big in [
            "18446744073709551616",
            "16777216T",
            "99999999999999999999999G",
        ] {
            let e = parse_size(big).unwrap_err();
            assert!(e.contains("too large"), "{big:?}: {e}");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(256 << 20), "256.0 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(2 << 40), "2.0 TiB");
        assert_eq!(human_size(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn a_formatted_size_parses_back_close_to_itself() {
        for n in [1u64 << 20, 3 << 29, 5 << 40] {
            let h = human_size(n).replace(' ', "").replace("iB", "");
            assert_eq!(parse_size(&h), Ok(n), "{h}");
        }
    }
}
