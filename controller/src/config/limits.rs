//! A workspace's sandbox limits as `workspace.json`, `config.toml` and the CLI give them,
//! and the check of limits against the launcher's policy.

use bulkhead_shared::{IoMax, LaunchSpec, Limits};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A workspace's sandbox limits as stored in `workspace.json` (every field optional; the
/// policy's defaults fill the rest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Pids limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// CPU weight (1-10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u32>,
    /// CPU quota as a fraction of one CPU in percent (e.g. 50 = half a CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
    /// `/tmp` size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmp_bytes: Option<u64>,
    /// Disk limit in bytes: `files/` is a filesystem of this size of its own (see
    /// [`crate::disk`]). A workspace setting: set with create or [`Workspace::set_limits`],
    /// refused on top of one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Inodes of that filesystem (needs a disk limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// IO weight (1-10000, 100 = the kernel's default; best effort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u32>,
    /// IO ceilings on the workspace's disk (`rbps=10M,wbps=5M,riops=100,wiops=100`;
    /// `none` clears them). Enforced or refused: never silently dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_max: Option<IoMaxSetting>,
}

/// An `io_max` setting: `key=value` pairs separated by commas, keys `rbps` and `wbps` (bytes
/// per second, with an optional K, M or G suffix) and `riops` and `wiops` (operations per
/// second), each at most once; `none` (or an empty string) for no ceiling. Stored and shown
/// in that same form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoMaxSetting(pub IoMax);

impl std::str::FromStr for IoMaxSetting {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let mut m = IoMax::default();
        if t.is_empty() || t == "none" {
            return Ok(IoMaxSetting(m));
        }
        let mut seen: Vec<&str> = Vec::new();
        for pair in t.split(',') {
            let Some((key, value)) = pair.trim().split_once('=') else {
                return Err(format!(
                    "io max {pair:?} is not key=value (example: rbps=10M,wbps=5M,riops=100,wiops=100, or none)"
                ));
            };
            let key = key.trim();
            if seen.contains(&key) {
                return Err(format!("io max key {key} is given twice"));
            }
            seen.push(key);
            let value = value.trim();
            let (slot, bytes) = match key {
                "rbps" => (&mut m.rbps, true),
                "wbps" => (&mut m.wbps, true),
                "riops" => (&mut m.riops, false),
                "wiops" => (&mut m.wiops, false),
                _ => {
                    return Err(format!(
                        "io max key {key:?} is unknown: use rbps, wbps (bytes per second) or riops, wiops (operations per second)"
                    ))
                }
            };
            *slot = parse_rate(value, bytes).ok_or_else(|| {
                format!(
                    "io max {key}={value:?} is not a positive whole number{}",
                    if bytes {
                        " with an optional K, M or G suffix"
                    } else {
                        ""
                    }
                )
            })?;
        }
        Ok(IoMaxSetting(m))
    }
}

fn parse_rate(v: &str, suffixes: bool) -> Option<u64> {
    let (num, mul) = match v.as_bytes().last()? {
        b'K' | b'k' if suffixes => (&v[..v.len() - 1], 1u64 << 10),
        b'M' | b'm' if suffixes => (&v[..v.len() - 1], 1 << 20),
        b'G' | b'g' if suffixes => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    let n: u64 = num.parse().ok()?;
    n.checked_mul(mul).filter(|&n| n > 0)
}

impl std::fmt::Display for IoMaxSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.0;
        let parts: Vec<String> = [
            ("rbps", m.rbps),
            ("wbps", m.wbps),
            ("riops", m.riops),
            ("wiops", m.wiops),
        ]
        .iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

impl Serialize for IoMaxSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for IoMaxSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl LimitsConfig {
    /// Applies these settings over `base`.
    pub fn apply(&self, mut base: Limits) -> Limits {
        if let Some(v) = self.memory_bytes {
            base.memory_bytes = v;
        }
        if let Some(v) = self.pids {
            base.pids = v;
        }
        if let Some(v) = self.cpu_weight {
            base.cpu_weight = v;
        }
        if let Some(p) = self.cpu_percent {
            base.cpu_quota_us = base.cpu_period_us * u64::from(p) / 100;
        }
        if let Some(v) = self.tmp_bytes {
            base.tmp_bytes = v;
        }
        if let Some(v) = self.io_weight {
            base.io_weight = v;
        }
        if let Some(v) = self.io_max {
            base.io_max = v.0;
        }
        if let Some(v) = self.disk_bytes {
            base.disk_bytes = v;
        }
        if let Some(v) = self.inodes {
            base.inodes = v;
        }
        base
    }

    /// Overlays `other`'s set fields on these.
    pub fn merged(&self, other: &LimitsConfig) -> LimitsConfig {
        LimitsConfig {
            memory_bytes: other.memory_bytes.or(self.memory_bytes),
            pids: other.pids.or(self.pids),
            cpu_weight: other.cpu_weight.or(self.cpu_weight),
            cpu_percent: other.cpu_percent.or(self.cpu_percent),
            tmp_bytes: other.tmp_bytes.or(self.tmp_bytes),
            io_weight: other.io_weight.or(self.io_weight),
            io_max: other.io_max.or(self.io_max),
            disk_bytes: other.disk_bytes.or(self.disk_bytes),
            inodes: other.inodes.or(self.inodes),
        }
    }
}

/// Checks limits against the policy the launcher will apply (a clear error now rather than
/// a setup failure later).
pub fn check_limits(limits: &Limits) -> Result<()> {
    let spec = LaunchSpec {
        workspace_id: "check".into(),
        workspace_dir: "/check".into(),
        workspace_writable: true,
        host_uid: 1,
        host_gid: 1,
        hostname: "check".into(),
        limits: limits.clone(),
        binds: vec![],
    };
    let caller = bulkhead_policy::Caller {
        privileged: false,
        uid: 1,
        gid: 1,
    };
    bulkhead_policy::validate_spec(
        &spec,
        caller,
        &bulkhead_policy::LaunchConfig::root_default(),
    )
    .map_err(|e| Error::Invalid(e.to_string()))
}
