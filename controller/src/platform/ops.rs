//! Workspace operations that more than one front end offers (`bulkhead workspace …` and
//! the JSON-RPC `workspace.*` methods): the same checks, the same result as JSON. The CLI
//! renders that JSON as text or prints it with `--json`; JSON-RPC returns it.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::hook_spec::{HookEventKind, HookSpec};
use super::{IoMaxSetting, LimitsConfig, Platform, Workspace};
use crate::error::{Error, Result};
use crate::util::parse_size;

impl Workspace {
    /// A workspace as `--json workspace show` prints it (also the JSON-RPC result).
    pub fn to_json(&self) -> Value {
        let w = self;
        let limits = w.limits(&LimitsConfig::default());
        json!({
            "id": w.id(),
            "created": w.record().created,
            "host_uid": w.record().host_uid,
            "path": w.dir(),
            "files": w.files_dir(),
            "model": w.record().config.model,
            "fallbacks": w.record().config.fallbacks,
            "base_url": w.record().config.base_url,
            "skills": w.record().config.skills,
            "limits": {
                "memory_bytes": limits.memory_bytes,
                "pids": limits.pids,
                "cpu_weight": limits.cpu_weight,
                "cpu_quota_us": limits.cpu_quota_us,
                "cpu_period_us": limits.cpu_period_us,
                "tmp_bytes": limits.tmp_bytes,
                "shm_bytes": limits.shm_bytes,
                "io_weight": limits.io_weight,
                "io_max": IoMaxSetting(limits.io_max).to_string(),
                "disk_bytes": limits.disk_bytes,
                "inodes": limits.inodes,
            },
            "disk": w.disk_usage(),
        })
    }

    /// `--json workspace net <id> show` (also the JSON-RPC result).
    pub fn net_json(&self, p: &Platform) -> Result<Value> {
        let w = self;
        let n = w.network();
        let op = p.operator_network();
        let totals = crate::net::proxy::audit_totals(&w.net_audit_log())?;
        let effective = op.effective_max_connections(n);
        Ok(json!({
            "workspace": w.id(),
            "network": n,
            "enabled": n.is_enabled(),
            "allow": n.allow,
            "max_connections": effective,
            "max_connections_setting": n.max_connections(),
            "max_connections_clamped": effective < n.max_connections(),
            "bandwidth_bytes_per_sec": n.bandwidth_bytes_per_sec,
            "operator": {
                "deny": op.deny,
                "allow_loopback": op.allow_loopback,
                "allow_private": op.allow_private,
                "resolve": op.resolve.iter().map(|(h, ip)| format!("{h}:{ip}")).collect::<Vec<_>>(),
                "max_connections_ceiling": op.max_connections_ceiling,
                "max_connections_total": op.max_connections_total,
            },
            "totals": totals,
            "audit_log": w.net_audit_log(),
        }))
    }

    /// `workspace hook <id> add`: validates `spec` and adds it (the same event and path again
    /// replaces it: `true`). Shared by the CLI and JSON-RPC.
    pub fn add_hook(&mut self, spec: HookSpec) -> Result<bool> {
        let w = self;
        spec.validate()?;
        w.update_hooks(move |hooks| {
            if let Some(h) = hooks
                .iter_mut()
                .find(|h| h.event == spec.event && h.path == spec.path)
            {
                *h = spec;
                Ok(true)
            } else {
                hooks.push(spec);
                Ok(false)
            }
        })
    }

    /// `workspace hook <id> rm`: removing a hook that is not there is an error (exit 2).
    /// Shared by the CLI and JSON-RPC.
    pub fn remove_hook(&mut self, event: HookEventKind, path: &Path) -> Result<()> {
        let w = self;
        let id = w.id().to_string();
        let p2 = path.to_path_buf();
        w.update_hooks(move |hooks| {
            let before = hooks.len();
            hooks.retain(|h| !(h.event == event && h.path == p2));
            if hooks.len() == before {
                return Err(Error::Invalid(format!(
                    "no {event} hook {} in this workspace (see `bulkhead workspace hook {id} list`)",
                    p2.display()
                )));
            }
            Ok(())
        })
    }

    /// `workspace net <id> allow`: adds `patterns`; the `--json` result (also JSON-RPC's), with
    /// the patterns the operator's rules refuse whatever the allowlist says.
    pub fn net_allow(&mut self, p: &Platform, patterns: &[String]) -> Result<Value> {
        let w = self;
        let (added, already) = w.update_network(|n| n.add(patterns))?;
        let mut refused = Map::new();
        for a in added.iter().chain(&already) {
            if let Some(d) = crate::net::egress::operator_refusal(w.id(), a, p.operator_network()) {
                refused.insert(
                    a.clone(),
                    d.message.trim_start_matches("bulkhead egress: ").into(),
                );
            }
        }
        Ok(json!({
            "workspace": w.id(),
            "added": added,
            "already_allowed": already,
            "refused_by_operator": refused,
            "allow": w.network().allow,
        }))
    }

    /// `workspace net <id> limits`: `max_connections` is a number or `default`, `bandwidth` a
    /// size (K, M, G suffixes) or `unlimited`; at least one is given. The `--json` result (also
    /// JSON-RPC's).
    pub fn net_limits(
        &mut self,
        p: &Platform,
        max_connections: Option<&str>,
        bandwidth: Option<&str>,
    ) -> Result<Value> {
        let w = self;
        if max_connections.is_none() && bandwidth.is_none() {
            return Err(Error::Invalid(
                "give --max-connections N|default and/or --bandwidth RATE|unlimited".into(),
            ));
        }
        let max = match max_connections {
            None => None,
            Some("default") => Some(None),
            Some(v) => Some(Some(v.parse::<u32>().map_err(|_| {
                Error::Invalid(format!(
                    "--max-connections {v:?}: expected a number from 1 to {} or `default`",
                    crate::net::egress::MAX_CONNECTIONS_LIMIT
                ))
            })?)),
        };
        let bw = match bandwidth {
            None => None,
            Some("unlimited") => Some(None),
            Some(v) => Some(Some(parse_size(v).map_err(|e| {
                Error::Invalid(format!("--bandwidth: {e}, or `unlimited`"))
            })?)),
        };
        w.update_network(|n| {
            if let Some(m) = max {
                n.max_connections = m;
            }
            if let Some(b) = bw {
                n.bandwidth_bytes_per_sec = b;
            }
            Ok(())
        })?;
        let n = w.network();
        let effective = p.operator_network().effective_max_connections(n);
        Ok(json!({
            "workspace": w.id(),
            "max_connections": effective,
            "max_connections_setting": n.max_connections(),
            "max_connections_clamped": effective < n.max_connections(),
            "bandwidth_bytes_per_sec": n.bandwidth_bytes_per_sec,
        }))
    }

    /// `workspace net <id> deny`: removes `patterns`; the `--json` result (also JSON-RPC's),
    /// with `still_allowed_by` naming what still admits a host that was named.
    pub fn net_deny(&mut self, patterns: &[String]) -> Result<Value> {
        let w = self;
        let (removed, absent) = w.update_network(|n| n.remove(patterns))?;
        let mut still = Map::new();
        for r in removed.iter().chain(&absent) {
            let by = crate::net::egress::still_allowed_by(w.network(), r);
            if !by.is_empty() {
                still.insert(r.clone(), json!(by));
            }
        }
        Ok(json!({
            "workspace": w.id(),
            "removed": removed,
            "not_present": absent,
            "still_allowed_by": still,
            "allow": w.network().allow,
            "enabled": w.network().is_enabled(),
        }))
    }
}
