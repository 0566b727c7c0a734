//! The proxy context of one sandbox: its policy, the per-workspace shared caps (connections, bandwidth, audit log) and admission.

use super::*;

/// A workspace's bandwidth limiters (one per direction) for the rate in force, shared by
/// its contexts.
#[derive(Debug, Default)]
pub(super) struct Limiters {
    pub(super) slot: Mutex<Option<RatePair>>,
}

/// The limiters of one rate, up and down.
#[derive(Debug)]
pub(super) struct RatePair {
    pub(super) rate: u64,
    pub(super) up: Arc<RateLimiter>,
    pub(super) down: Arc<RateLimiter>,
}

pub(super) type LimiterPair = (Option<Arc<RateLimiter>>, Option<Arc<RateLimiter>>);

impl Limiters {
    /// The limiters for `rate` (kept while the rate stays the same, so a policy reload does
    /// not reset them); none when unlimited.
    pub(super) fn for_rate(&self, rate: Option<u64>) -> LimiterPair {
        let mut slot = lock(&self.slot);
        // No rate: none for this context. The pair in force stays: another context of the
        // workspace (its sandbox, while a skill runs) may use it, and a context that comes
        // back to the same rate must not get a fresh budget.
        let Some(rate) = rate else {
            return (None, None);
        };
        match &*slot {
            Some(p) if p.rate == rate => (Some(p.up.clone()), Some(p.down.clone())),
            _ => {
                let up = Arc::new(RateLimiter::new(rate));
                let down = Arc::new(RateLimiter::new(rate));
                *slot = Some(RatePair {
                    rate,
                    up: up.clone(),
                    down: down.clone(),
                });
                (Some(up), Some(down))
            }
        }
    }
}

/// The policy in force and the limiters for it.
#[derive(Debug)]
pub(super) struct Live {
    pub(super) policy: Arc<EgressPolicy>,
    pub(super) up: Option<Arc<RateLimiter>>,
    pub(super) down: Option<Arc<RateLimiter>>,
}

impl Live {
    pub(super) fn new(policy: EgressPolicy, limiters: &Limiters) -> Live {
        let (up, down) = limiters.for_rate(policy.network().bandwidth_bytes_per_sec);
        Live {
            policy: Arc::new(policy),
            up,
            down,
        }
    }
}

/// What every [`ProxyContext`] of one workspace shares within this process: the connection
/// counters (so the connection cap holds for all its sandboxes together), the bandwidth
/// limiters and the audit-log writer.
#[derive(Debug)]
pub(super) struct WorkspaceShared {
    pub(super) counters: Arc<NetCounters>,
    pub(super) limiters: Arc<Limiters>,
    pub(super) audit: Arc<AuditLog>,
}

/// Workspaces with a live context in this process, by workspace directory (state dir and
/// id). Weak: the entry goes when the last context of the workspace does (its last sandbox
/// ended), which also closes the audit log.
pub(super) type Registry = Mutex<HashMap<PathBuf, Weak<WorkspaceShared>>>;

pub(super) fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl WorkspaceShared {
    /// The shared state of `ws` in this process, made on first use.
    pub(super) fn of(ws: &Workspace) -> Result<Arc<WorkspaceShared>> {
        let dir = ws.dir();
        let key = std::fs::canonicalize(&dir).unwrap_or(dir);
        let mut map = lock(registry());
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(s);
        }
        map.retain(|_, w| w.strong_count() > 0);
        let shared = Arc::new(WorkspaceShared {
            counters: Arc::default(),
            limiters: Arc::default(),
            audit: Arc::new(AuditLog::open(ws.net_audit_log())?),
        });
        map.insert(key, Arc::downgrade(&shared));
        Ok(shared)
    }
}

/// A skill's policy inside its workspace's limits: the skill's allowlist, the lower of the
/// two connection caps, and the workspace's bandwidth (the same rate, so the skill's
/// connections take from the workspace's shared limiters, never from a pair of their own).
pub(super) fn within_workspace(skill: &NetworkPolicy, workspace: &NetworkPolicy) -> NetworkPolicy {
    NetworkPolicy {
        allow: skill.allow.clone(),
        max_connections: Some(skill.max_connections().min(workspace.max_connections())),
        bandwidth_bytes_per_sec: workspace.bandwidth_bytes_per_sec,
    }
}

/// Proxied connections open now in this process, all workspaces together (what the
/// operator's `max_connections_total` caps).
pub fn open_connections_total() -> u64 {
    process_gauge().load(Ordering::Relaxed)
}

pub(super) fn process_gauge() -> Arc<AtomicU64> {
    static GAUGE: OnceLock<Arc<AtomicU64>> = OnceLock::new();
    GAUGE.get_or_init(Arc::default).clone()
}

/// Where the workspace's policy comes from.
pub(super) enum Source {
    /// Given, changed only by [`ProxyContext::set_policy`].
    Fixed,
    /// `workspace.json`, re-read when it changes (a `bulkhead workspace net` command takes
    /// effect on the next connection).
    Workspace {
        ws: Box<Workspace>,
        stamp: Mutex<Option<(u64, u64, i64, i64)>>,
    },
}

/// Everything the proxy needs to serve one workspace's connections.
pub struct ProxyContext {
    pub(super) workspace: String,
    pub(super) operator: OperatorNetwork,
    pub(super) live: RwLock<Arc<Live>>,
    pub(super) source: Source,
    pub(super) resolver: Arc<dyn Resolve>,
    pub(super) connector: Arc<dyn Connect>,
    pub(super) counters: Arc<NetCounters>,
    pub(super) limiters: Arc<Limiters>,
    pub(super) audit: Option<Arc<AuditLog>>,
    /// Connections open in the whole process (or a gauge given to this context).
    pub(super) total_open: Arc<AtomicU64>,
    pub(super) timeouts: ProxyTimeouts,
    /// Keeps the workspace's registry entry alive while this context is.
    pub(super) _shared: Option<Arc<WorkspaceShared>>,
}

impl fmt::Debug for ProxyContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyContext")
            .field("workspace", &self.workspace)
            .field("policy", &self.policy())
            .field(
                "audit",
                &self.audit.as_ref().map(|a| a.path().to_path_buf()),
            )
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy)]
pub(super) enum Busy {
    /// The workspace has this many open (its cap; `true`: clamped by the operator's ceiling).
    Workspace(u32, bool),
    /// The process has this many open (the operator's `max_connections_total`).
    Process(u32),
}

impl ProxyContext {
    /// A context enforcing `network` (a workspace's policy) under the operator's rules:
    /// resolution through [`DnsResolver`] (the operator's `resolve` first), direct
    /// connections, no audit log (add one with [`ProxyContext::with_audit_log`]). Its
    /// counters and limiters are its own (see [`ProxyContext::from_workspace`] for the
    /// shared ones); its connections count against the process-wide `max_connections_total`.
    pub fn new(
        workspace: &str,
        network: &NetworkPolicy,
        operator: &OperatorNetwork,
    ) -> Result<ProxyContext> {
        Self::build(workspace, network, operator, None)
    }

    pub(super) fn build(
        workspace: &str,
        network: &NetworkPolicy,
        operator: &OperatorNetwork,
        shared: Option<Arc<WorkspaceShared>>,
    ) -> Result<ProxyContext> {
        let policy = EgressPolicy::new(workspace, network, operator)?;
        let timeouts = ProxyTimeouts::default();
        let (counters, limiters, audit) = match &shared {
            Some(s) => (
                s.counters.clone(),
                s.limiters.clone(),
                Some(s.audit.clone()),
            ),
            None => (Arc::default(), Arc::<Limiters>::default(), None),
        };
        Ok(ProxyContext {
            workspace: workspace.to_string(),
            operator: operator.clone(),
            live: RwLock::new(Arc::new(Live::new(policy, &limiters))),
            source: Source::Fixed,
            resolver: Arc::new(DnsResolver::new(operator, timeouts.resolve)),
            connector: Arc::new(DirectConnect),
            counters,
            limiters,
            audit,
            total_open: process_gauge(),
            timeouts,
            _shared: shared,
        })
    }

    /// The context of a skill run in workspace `ws`: the skill's own allowlist (`network`,
    /// with the platform's `[network]` rules on top) inside the workspace's limits: its
    /// bandwidth and `max_connections` as `workspace.json` has them now (the lower cap where
    /// `network` names its own), and the workspace's connection counters, bandwidth
    /// limiters and audit log, so a skill's connections count against the workspace's caps
    /// and appear in `bulkhead workspace net <ws> log` under `label` (e.g.
    /// `acme/skill:github`).
    pub fn for_skill(ws: &Workspace, label: &str, network: &NetworkPolicy) -> Result<ProxyContext> {
        let ws = ws.reload()?;
        let shared = WorkspaceShared::of(&ws)?;
        let inside = within_workspace(network, ws.network());
        ProxyContext::build(label, &inside, ws.operator_network(), Some(shared))
    }

    /// The context of workspace `id` of `platform`: see [`ProxyContext::from_workspace`].
    pub fn for_workspace(platform: &Platform, id: &str) -> Result<ProxyContext> {
        ProxyContext::from_workspace(&platform.workspace(id)?)
    }

    /// The context of a workspace: its policy (re-read from `workspace.json` whenever that
    /// file changes, so `bulkhead workspace net` takes effect on the next connection), the
    /// platform's `[network]` rules, and the audit log `<workspace>/net-audit.log`.
    ///
    /// Every context of the same workspace (same state directory and id) alive in this
    /// process shares its connection counters, so the connection cap holds for all the
    /// workspace's sandboxes together, its bandwidth limiters and its audit-log writer.
    pub fn from_workspace(ws: &Workspace) -> Result<ProxyContext> {
        // The file's identity before reading it: a change in between is seen next time.
        let stamp = stamp_of(&ws.config_path());
        let ws = ws.reload()?;
        let shared = WorkspaceShared::of(&ws)?;
        let mut ctx =
            ProxyContext::build(ws.id(), ws.network(), ws.operator_network(), Some(shared))?;
        ctx.source = Source::Workspace {
            ws: Box::new(ws),
            stamp: Mutex::new(stamp),
        };
        Ok(ctx)
    }

    /// Records every connection in `log`.
    pub fn with_audit_log(mut self, log: AuditLog) -> Self {
        self.audit = Some(Arc::new(log));
        self
    }

    /// Resolves names with `resolver` instead of [`DnsResolver`] (the operator's `resolve`
    /// overrides are then the resolver's business).
    pub fn with_resolver(mut self, resolver: impl Resolve + 'static) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// Connects with `connector` instead of [`DirectConnect`].
    pub fn with_connector(mut self, connector: impl Connect + 'static) -> Self {
        self.connector = Arc::new(connector);
        self
    }

    /// Other timeouts (the default resolver keeps its own; give one with
    /// [`ProxyContext::with_resolver`] to change that).
    pub fn with_timeouts(mut self, timeouts: ProxyTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Shares `counters` (e.g. with another context of the same workspace).
    pub fn with_counters(mut self, counters: Arc<NetCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Counts this context's connections against `gauge`, capped by the operator's
    /// `max_connections_total`, instead of the process-wide count (a separate pool; tests).
    pub fn with_connection_gauge(mut self, gauge: Arc<AtomicU64>) -> Self {
        self.total_open = gauge;
        self
    }

    /// The workspace id.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<EgressPolicy> {
        self.current().policy.clone()
    }

    /// Replaces the workspace's policy (from the next connection on).
    pub fn set_policy(&self, network: &NetworkPolicy) -> Result<()> {
        let policy = EgressPolicy::new(&self.workspace, network, &self.operator)?;
        let mut g = match self.live.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Arc::new(Live::new(policy, &self.limiters));
        Ok(())
    }

    /// The live counters (shared by every context of the workspace made with
    /// [`ProxyContext::from_workspace`] in this process).
    pub fn counters(&self) -> &Arc<NetCounters> {
        &self.counters
    }

    /// The timeouts.
    pub fn timeouts(&self) -> &ProxyTimeouts {
        &self.timeouts
    }

    pub(super) fn current(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The policy as it is on disk when no other thread is re-reading it, else the one in
    /// memory: for the loop that admits connections, which must not wait on a slow disk or
    /// another connection's reload (each connection's own thread refreshes before deciding).
    fn refresh_if_free(&self) -> Arc<Live> {
        let Source::Workspace { stamp, .. } = &self.source else {
            return self.current();
        };
        let seen = match stamp.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return self.current(),
        };
        self.refresh_holding(seen)
            .unwrap_or_else(|_| self.current())
    }

    /// The policy for a new connection: re-read from `workspace.json` when it changed.
    /// Fails closed when the file cannot be read.
    pub(super) fn refresh(&self) -> std::result::Result<Arc<Live>, Denial> {
        let Source::Workspace { stamp, .. } = &self.source else {
            return Ok(self.current());
        };
        let seen = match stamp.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        self.refresh_holding(seen)
    }

    /// [`ProxyContext::refresh`] with the stamp's lock already held.
    fn refresh_holding(
        &self,
        mut seen: std::sync::MutexGuard<'_, Option<(u64, u64, i64, i64)>>,
    ) -> std::result::Result<Arc<Live>, Denial> {
        let Source::Workspace { ws, .. } = &self.source else {
            return Ok(self.current());
        };
        let now = stamp_of(&ws.config_path());
        // A stamp seen before is trusted only once the file is old enough that a second write
        // within the file system's timestamp granularity would have shown (the "racily clean"
        // rule of git's index): a change written just after the last read, with the same size
        // and a reused inode or a coarse mtime, would otherwise go unnoticed.
        if now.is_some() && *seen == now && !recently_written(now) {
            return Ok(self.current());
        }
        let unreadable = |e: &dyn fmt::Display| {
            log::warn!(target: "egress", workspace = self.workspace.as_str(); "cannot reload the egress policy: {e}");
            Denial {
                kind: "config",
                message: format!(
                    "bulkhead egress: the network policy of workspace {} cannot be read; ask the operator to check it",
                    self.workspace
                ),
            }
        };
        let fresh = ws.reload().map_err(|e| unreadable(&e))?;
        self.set_policy(fresh.network())
            .map_err(|e| unreadable(&e))?;
        *seen = now;
        Ok(self.current())
    }

    /// Takes a connection slot: one of the workspace's (its cap, clamped by the operator's
    /// ceiling), then one of the process's (the operator's `max_connections_total`).
    pub(super) fn admit(&self) -> std::result::Result<Permit, Busy> {
        // The cap of the policy as it is now on disk, so a change (`workspace net limits`)
        // counts from the next connection; a policy that cannot be read is refused after
        // admission, by `refresh` in `serve_admitted`.
        let policy = self.refresh_if_free().policy.clone();
        let cap = policy.max_connections();
        let prev = self.counters.open.fetch_add(1, Ordering::AcqRel);
        if prev >= u64::from(cap) {
            self.counters.open.fetch_sub(1, Ordering::AcqRel);
            let clamped = cap < policy.network().max_connections();
            return Err(Busy::Workspace(cap, clamped));
        }
        let total = self.operator.max_connections_total.max(1);
        let prev = self.total_open.fetch_add(1, Ordering::AcqRel);
        if prev >= u64::from(total) {
            self.total_open.fetch_sub(1, Ordering::AcqRel);
            self.counters.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy::Process(total));
        }
        Ok(Permit {
            counters: self.counters.clone(),
            total: self.total_open.clone(),
        })
    }

    pub(super) fn finish(&self, rec: &ConnRecord) {
        let c = &self.counters;
        c.total.fetch_add(1, Ordering::Relaxed);
        match rec.decision {
            Decision::Allowed => {}
            Decision::Denied => {
                c.denied.fetch_add(1, Ordering::Relaxed);
            }
            Decision::Failed => {
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        // The log line follows the audit line: a refusal the audit log only counts (past
        // its rate) is not logged one by one either.
        let written = match &self.audit {
            Some(a) => a.append(rec),
            None => true,
        };
        let reason = rec.reason.as_deref().unwrap_or("");
        let addr = rec.addr.as_deref().unwrap_or("");
        if !written {
            // Counted in the audit log's summary line, which logs a warning of its own.
        } else if rec.decision == Decision::Allowed {
            log::info!(
                target: "egress",
                workspace = rec.workspace.as_str(),
                host = rec.host.as_str(),
                port = rec.port,
                method = rec.method.as_str(),
                decision = rec.decision.as_str(),
                addr = addr,
                bytes_up = rec.bytes_up,
                bytes_down = rec.bytes_down,
                duration_ms = rec.duration_ms;
                "egress connection"
            );
        } else {
            log::warn!(
                target: "egress",
                workspace = rec.workspace.as_str(),
                host = rec.host.as_str(),
                port = rec.port,
                method = rec.method.as_str(),
                decision = rec.decision.as_str(),
                reason = reason,
                duration_ms = rec.duration_ms;
                "egress connection refused"
            );
        }
    }
}

/// Whether a file with this stamp was modified in the last two seconds.
fn recently_written(stamp: Option<(u64, u64, i64, i64)>) -> bool {
    let Some((_, _, secs, _)) = stamp else {
        return true;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(i64::MAX);
    // A modification time in the future (the clock stepped back) is not "recent": the stamp
    // alone decides then, rather than re-reading on every connection.
    (0..2).contains(&now.saturating_sub(secs))
}

pub(super) fn stamp_of(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// A held connection slot (the workspace's and the process's).
pub(super) struct Permit {
    pub(super) counters: Arc<NetCounters>,
    pub(super) total: Arc<AtomicU64>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::AcqRel);
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}
