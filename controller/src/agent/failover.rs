//! Model calls with failover: retries, key rotation, fallback chains and cooldowns.
//!
//! One call of the loop walks the chain (primary, then fallbacks, in order):
//!
//! 1. A model in cooldown is skipped (recorded as an attempt with outcome `cooldown`),
//!    unless its cooldown is near its end (the last fifth, 2 to 30 s) and it was not probed
//!    in the last 30 s: then it is *probed* (called once more; success clears the cooldown).
//! 2. A model is called with the current key of its provider's [`KeyRing`]. On failure, the
//!    error's [`FailoverReason`] decides:
//!    - `context_overflow`: returned to the loop at once, which compacts and calls again
//!      (never retried blindly);
//!    - `rate_limit`, `billing`, `auth`, `auth_permanent`: the key cools down and the next
//!      key is used at once (`key_rotation` event); with no other key, a rate limit is
//!      retried after `Retry-After`/backoff, the others fall back;
//!    - `overloaded`, `timeout`, `unknown`: retried after exponential backoff with jitter
//!      that honours `Retry-After` ([`RetryPolicy`]), up to its attempt budget;
//!    - anything else, or a spent budget: the model cools down (rate limit and overloaded
//!      30 s or `Retry-After`, timeout and unknown 15 s, billing, auth and model-not-found
//!      1 h) and the next model is tried (`fallback` event);
//!    - `blocked` (the SSRF guard refused the base URL before any request, or the server
//!      redirected): not retried, no key rotation, no cooldown; the next model is tried.
//! 3. When every model failed or is cooling down and the soonest cooldown ends within
//!    [`RetryPolicy::max_retry_after`], the loop waits for it and probes that model once.
//!    Otherwise the call fails and the run's error lists every attempt with its reason.
//!
//! Cooldowns are kept per workspace and `provider/model` in a process-wide table
//! ([`Cooldowns::global`]), so the runs of a long-lived host process share them; a CLI run
//! starts with none. Key cooldowns live in the run's key rings.

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::llm::retry::jitter_sample;
use crate::llm::{
    ChatRequest, ChatResponse, FailoverReason, KeyRing, ModelRef, Provider, ProviderError,
    RetryDecision, RetryPolicy,
};

use super::events::{Attempt, RunEvent};
use crate::util::cancel::CancelToken;

/// Time between two probes of one model.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Entry {
    until: Instant,
    total: Duration,
    reason: FailoverReason,
    last_probe: Option<Instant>,
}

/// What [`Cooldowns::check`] says about a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CooldownCheck {
    /// Not cooling down.
    Ready,
    /// Cooling down, near the end: probe it.
    Probe,
    /// Cooling down: skip it.
    Cooling {
        /// Time left.
        remaining: Duration,
        /// Why it cools down.
        reason: FailoverReason,
    },
}

/// Cooldowns of models, keyed by scope (workspace) and `provider/model`.
#[derive(Debug, Default)]
pub struct Cooldowns {
    map: Mutex<HashMap<String, Entry>>,
}

fn probe_margin(total: Duration) -> Duration {
    (total / 5).clamp(Duration::from_secs(2), Duration::from_secs(30))
}

impl Cooldowns {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide table.
    pub fn global() -> &'static Cooldowns {
        static G: OnceLock<Cooldowns> = OnceLock::new();
        G.get_or_init(Cooldowns::new)
    }

    /// How long a model is set aside after failing with `reason` (`None`: not at all).
    pub fn duration_for(reason: FailoverReason, retry_after: Option<Duration>) -> Option<Duration> {
        use FailoverReason as R;
        let hour = Duration::from_secs(3600);
        match reason {
            R::RateLimit | R::Overloaded => Some(
                retry_after
                    .unwrap_or(Duration::from_secs(30))
                    .clamp(Duration::from_secs(1), hour),
            ),
            R::Timeout | R::Unknown => Some(Duration::from_secs(15)),
            R::Billing | R::Auth | R::AuthPermanent | R::ModelNotFound => Some(hour),
            // A blocked destination sent no request: checking again costs nothing, and a
            // configuration the operator fixes applies to the next call.
            R::Format | R::ContextOverflow | R::SessionExpired | R::Blocked => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` may be called now (marks a probe as made when it says `Probe`).
    pub fn check(&self, key: &str, now: Instant) -> CooldownCheck {
        let mut m = self.lock();
        let Some(e) = m.get_mut(key) else {
            return CooldownCheck::Ready;
        };
        if e.until <= now {
            m.remove(key);
            return CooldownCheck::Ready;
        }
        let remaining = e.until - now;
        let probe_due = e
            .last_probe
            .map_or(true, |t| now.duration_since(t) >= PROBE_INTERVAL);
        if remaining <= probe_margin(e.total) && probe_due {
            e.last_probe = Some(now);
            return CooldownCheck::Probe;
        }
        CooldownCheck::Cooling {
            remaining,
            reason: e.reason,
        }
    }

    /// Records a failure: `key` cools down per [`Cooldowns::duration_for`] (a longer
    /// cooldown already running is kept).
    pub fn fail(
        &self,
        key: &str,
        reason: FailoverReason,
        retry_after: Option<Duration>,
        now: Instant,
    ) {
        let Some(d) = Self::duration_for(reason, retry_after) else {
            return;
        };
        let mut m = self.lock();
        let until = now + d;
        match m.get_mut(key) {
            Some(e) if e.until >= until => {}
            Some(e) => {
                e.until = until;
                e.total = d;
                e.reason = reason;
            }
            None => {
                m.insert(
                    key.to_string(),
                    Entry {
                        until,
                        total: d,
                        reason,
                        last_probe: None,
                    },
                );
            }
        }
    }

    /// Records a success: the cooldown of `key` ends.
    pub fn succeed(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// One model of the chain.
pub(crate) struct Slot {
    pub model: ModelRef,
    pub provider: Arc<dyn Provider>,
    /// Context window in tokens.
    pub window: u32,
}

/// Why a call did not produce a reply.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The prompt does not fit this slot's model: compact, or exclude it and call again.
    Overflow { slot: usize },
    /// Every model failed (see the attempts).
    AllFailed,
    /// The run was cancelled.
    Cancelled,
    /// The run's deadline passed.
    TimedOut,
}

enum SlotError {
    Overflow,
    Failed {
        label: String,
        reason: FailoverReason,
        retry_after: Option<Duration>,
        cool: bool,
    },
    Cancelled,
    TimedOut,
}

/// Makes the model calls of one run.
pub(crate) struct Caller<'a> {
    pub slots: Vec<Slot>,
    pub rings: HashMap<String, KeyRing>,
    pub cooldowns: &'a Cooldowns,
    pub scope: String,
    pub policy: RetryPolicy,
    pub cancel: CancelToken,
    pub deadline: Option<Instant>,
    /// Every attempt so far.
    pub attempts: Vec<Attempt>,
    /// Lines for the transcript (`error` events): (message, kind).
    pub notes: Vec<(String, String)>,
    /// The slot that answered last.
    pub active: usize,
}

/// The message for a provider without keys.
pub(crate) fn no_key_message(provider: &str, workspace: &str) -> String {
    let prefixes: Vec<String> = crate::llm::models::lookup_provider(provider)
        .map(|s| {
            s.key_env_prefixes
                .iter()
                .map(|p| format!("{p}_API_KEY"))
                .collect()
        })
        .unwrap_or_else(|| vec![format!("{}_API_KEY", provider.to_ascii_uppercase())]);
    format!(
        "no API key for {provider}: set {} (or a list in {}S), or store one with \
         `bulkhead cred set {workspace} {provider} api_key=…` (read when the credential key is given)",
        prefixes.join(" or "),
        prefixes[0]
    )
}

enum Msg {
    Delta(String),
    Done(Result<ChatResponse, ProviderError>),
    Cancel,
}

impl Caller<'_> {
    fn cooldown_key(&self, i: usize) -> String {
        format!("{}\u{0}{}", self.scope, self.slots[i].model)
    }

    fn check_stop(&self) -> Result<(), SlotError> {
        if self.cancel.is_cancelled() {
            return Err(SlotError::Cancelled);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(SlotError::TimedOut);
        }
        Ok(())
    }

    fn sleep(&self, d: Duration) -> Result<(), SlotError> {
        let d = match self.deadline {
            Some(end) => {
                let left = end.saturating_duration_since(Instant::now());
                if d >= left {
                    self.cancel.sleep(left);
                    return Err(if self.cancel.is_cancelled() {
                        SlotError::Cancelled
                    } else {
                        SlotError::TimedOut
                    });
                }
                d
            }
            None => d,
        };
        if self.cancel.sleep(d) {
            Ok(())
        } else {
            Err(SlotError::Cancelled)
        }
    }

    /// One model call, made on a thread of its own so a cancellation or the run's deadline
    /// returns at once (the abandoned call ends on its own: at the run's deadline, which
    /// bounds the HTTP exchange, else within the HTTP timeouts).
    fn chat(
        &self,
        i: usize,
        req: &ChatRequest,
        key: &crate::llm::ApiKey,
        step: usize,
        emit: &mut dyn FnMut(RunEvent),
    ) -> Result<Result<ChatResponse, ProviderError>, SlotError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let tx_cancel = tx.clone();
        let _hook = self.cancel.on_cancel(move || {
            let _ = tx_cancel.send(Msg::Cancel);
        });
        let provider = Arc::clone(&self.slots[i].provider);
        let (mut req, key) = (req.clone(), key.clone());
        // The HTTP exchange itself ends at the run's deadline, so the abandoned call does
        // not outlive the run by the client's own timeouts.
        req.deadline = match (req.deadline, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (pname, mname) = (provider.name().to_string(), req.model.clone());
        let spawned = std::thread::Builder::new()
            .name("bulkhead-llm".into())
            .spawn(move || {
                let tx_delta = tx.clone();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    provider.chat(&req, &key, &mut |d| {
                        let _ = tx_delta.send(Msg::Delta(d.to_string()));
                    })
                }))
                .unwrap_or_else(|_| {
                    Err(ProviderError::new(
                        FailoverReason::Unknown,
                        None,
                        "the model client panicked",
                        None,
                        &pname,
                        &mname,
                        None,
                    ))
                });
                let _ = tx.send(Msg::Done(r));
            });
        if let Err(e) = spawned {
            return Ok(Err(ProviderError::new(
                FailoverReason::Unknown,
                None,
                format!("cannot start a thread for the model call: {e}"),
                None,
                self.slots[i].provider.name(),
                &self.slots[i].model.model,
                None,
            )));
        }
        loop {
            let msg = match self.deadline {
                Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                    Ok(m) => m,
                    Err(mpsc::RecvTimeoutError::Timeout) => return Err(SlotError::TimedOut),
                    Err(mpsc::RecvTimeoutError::Disconnected) => return Err(SlotError::Cancelled),
                },
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return Err(SlotError::Cancelled),
                },
            };
            match msg {
                Msg::Delta(text) => emit(RunEvent::TextDelta { step, text }),
                Msg::Done(r) => return Ok(r),
                Msg::Cancel => return Err(SlotError::Cancelled),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        step: usize,
        i: usize,
        key_index: Option<usize>,
        outcome: &str,
        err: Option<&ProviderError>,
        message: Option<String>,
        probe: bool,
        duration: Duration,
    ) {
        let slot = &self.slots[i];
        let key_source = key_index.and_then(|k| {
            self.rings
                .get(&slot.model.provider)
                .and_then(|r| r.source(k))
                .map(|s| s.to_string())
        });
        let a = Attempt {
            step,
            provider: slot.model.provider.clone(),
            model: slot.model.model.clone(),
            key_index,
            key_source,
            outcome: outcome.to_string(),
            reason: err.map(|e| e.reason),
            status: err.and_then(|e| e.status),
            message: message.or_else(|| err.map(|e| e.message.clone())),
            probe,
            duration,
        };
        if !a.ok() {
            self.notes.push((a.to_string(), "llm".into()));
        }
        self.attempts.push(a);
    }

    fn try_slot(
        &mut self,
        i: usize,
        step: usize,
        base: &ChatRequest,
        probe: bool,
        emit: &mut dyn FnMut(RunEvent),
    ) -> Result<ChatResponse, SlotError> {
        let provider = self.slots[i].model.provider.clone();
        let model = self.slots[i].model.model.clone();
        if self.rings.get(&provider).map_or(true, KeyRing::is_empty) {
            let msg = no_key_message(&provider, &self.scope);
            self.record(
                step,
                i,
                None,
                "no_key",
                None,
                Some(msg),
                probe,
                Duration::ZERO,
            );
            return Err(SlotError::Failed {
                label: "no_key".into(),
                reason: FailoverReason::Auth,
                retry_after: None,
                cool: false,
            });
        }
        let mut req = base.clone();
        req.model = model.clone();
        let mut tries: u32 = 0;
        let mut last_reason = FailoverReason::Unknown;
        loop {
            self.check_stop()?;
            let now = Instant::now();
            let ring = self.rings.get_mut(&provider).expect("ring checked above");
            let (kidx, key) = match ring.current(now) {
                Some((k, key)) => (k, key.clone()),
                None => {
                    let wait = ring
                        .next_ready_at()
                        .map(|t| t.saturating_duration_since(now));
                    match wait {
                        Some(w)
                            if w <= self.policy.max_retry_after
                                && tries < self.policy.max_attempts =>
                        {
                            emit(RunEvent::Retry {
                                provider: provider.clone(),
                                model: model.clone(),
                                reason: last_reason,
                                status: None,
                                delay_ms: w.as_millis() as u64,
                                attempt: tries + 1,
                                message: format!("every key of {provider} is cooling down"),
                            });
                            self.sleep(w)?;
                            continue;
                        }
                        _ => {
                            return Err(SlotError::Failed {
                                label: last_reason.as_str().into(),
                                reason: last_reason,
                                retry_after: wait,
                                cool: true,
                            })
                        }
                    }
                }
            };
            emit(RunEvent::ModelAttempt {
                step,
                provider: provider.clone(),
                model: model.clone(),
                key_index: Some(kidx),
                key_source: ring.source(kidx).map(|s| s.to_string()),
                probe,
            });
            let t0 = Instant::now();
            let r = self.chat(i, &req, &key, step, emit)?;
            let took = t0.elapsed();
            let e = match r {
                Ok(resp) => {
                    if let Some(ring) = self.rings.get_mut(&provider) {
                        ring.report_success(kidx);
                    }
                    self.record(step, i, Some(kidx), "ok", None, None, probe, took);
                    return Ok(resp);
                }
                Err(e) => e,
            };
            self.record(
                step,
                i,
                Some(kidx),
                e.reason.as_str(),
                Some(&e),
                None,
                probe,
                took,
            );
            log::info!(target: "agent", workspace = self.scope.as_str(); "model call failed: {e}");
            last_reason = e.reason;
            if e.reason.needs_compaction() {
                return Err(SlotError::Overflow);
            }
            tries += 1;
            let decision = self
                .policy
                .decide(tries, e.reason, e.retry_after, jitter_sample());
            if e.reason.rotates_key() {
                // A rate-limited key is set aside for as long as we would wait anyway.
                let cool = match (e.reason, decision) {
                    (FailoverReason::RateLimit, RetryDecision::Wait(d)) => Some(d),
                    (FailoverReason::RateLimit, RetryDecision::GiveUp(ra)) => {
                        Some(ra.unwrap_or(Duration::from_secs(60)))
                    }
                    _ => e.retry_after,
                };
                let ring = self.rings.get_mut(&provider).expect("ring checked above");
                if ring.report_failure(kidx, e.reason, cool, Instant::now()) {
                    self.notes.push((
                        format!(
                            "{provider}: key #{} failed ({}); using the next key",
                            kidx + 1,
                            e.reason
                        ),
                        "key_rotation".into(),
                    ));
                    emit(RunEvent::KeyRotation {
                        provider: provider.clone(),
                        from_key: kidx,
                        reason: e.reason,
                    });
                    continue;
                }
                if e.reason != FailoverReason::RateLimit {
                    return Err(SlotError::Failed {
                        label: e.reason.as_str().into(),
                        reason: e.reason,
                        retry_after: e.retry_after,
                        cool: true,
                    });
                }
            }
            match decision {
                RetryDecision::Wait(d) => {
                    emit(RunEvent::Retry {
                        provider: provider.clone(),
                        model: model.clone(),
                        reason: e.reason,
                        status: e.status,
                        delay_ms: d.as_millis() as u64,
                        attempt: tries + 1,
                        message: e.message.clone(),
                    });
                    self.sleep(d)?;
                }
                RetryDecision::GiveUp(ra) => {
                    return Err(SlotError::Failed {
                        label: e.reason.as_str().into(),
                        reason: e.reason,
                        retry_after: ra,
                        cool: true,
                    })
                }
            }
        }
    }

    /// Calls the chain for `base` (its `model` is set per slot), skipping the `exclude`d
    /// slots.
    pub(crate) fn call(
        &mut self,
        step: usize,
        base: &ChatRequest,
        exclude: &[usize],
        emit: &mut dyn FnMut(RunEvent),
    ) -> Result<(ChatResponse, usize), CallError> {
        let mut last: Option<(String, String)> = None;
        let mut skipped: Vec<(usize, Duration, FailoverReason)> = Vec::new();
        let conv = |e: SlotError| match e {
            SlotError::Cancelled => CallError::Cancelled,
            SlotError::TimedOut => CallError::TimedOut,
            _ => CallError::AllFailed,
        };
        for i in 0..self.slots.len() {
            if exclude.contains(&i) {
                continue;
            }
            let name = self.slots[i].model.to_string();
            let ckey = self.cooldown_key(i);
            let probe = match self.cooldowns.check(&ckey, Instant::now()) {
                CooldownCheck::Ready => false,
                CooldownCheck::Probe => true,
                CooldownCheck::Cooling { remaining, reason } => {
                    let msg = format!(
                        "cooling down after {reason} ({:.0}s left)",
                        remaining.as_secs_f64()
                    );
                    self.record(
                        step,
                        i,
                        None,
                        "cooldown",
                        None,
                        Some(msg),
                        false,
                        Duration::ZERO,
                    );
                    skipped.push((i, remaining, reason));
                    last = Some((name, "cooldown".into()));
                    continue;
                }
            };
            if let Some((from, reason)) = last.take() {
                self.fallback(&from, &name, &reason, emit);
            }
            match self.try_slot(i, step, base, probe, emit) {
                Ok(resp) => {
                    self.cooldowns.succeed(&ckey);
                    self.active = i;
                    return Ok((resp, i));
                }
                Err(SlotError::Overflow) => return Err(CallError::Overflow { slot: i }),
                Err(SlotError::Failed {
                    label,
                    reason,
                    retry_after,
                    cool,
                }) => {
                    if cool {
                        self.cooldowns
                            .fail(&ckey, reason, retry_after, Instant::now());
                    }
                    last = Some((name, label));
                }
                Err(e) => return Err(conv(e)),
            }
        }
        // Everything failed or is cooling down: wait for the soonest short cooldown and
        // probe that model once.
        let soonest = skipped.iter().min_by_key(|(_, r, _)| *r).copied();
        if let Some((i, remaining, reason)) = soonest {
            if remaining <= self.policy.max_retry_after {
                let slot = &self.slots[i].model;
                emit(RunEvent::Retry {
                    provider: slot.provider.clone(),
                    model: slot.model.clone(),
                    reason,
                    status: None,
                    delay_ms: remaining.as_millis() as u64,
                    attempt: 1,
                    message: "every model is failing or cooling down; waiting for this one".into(),
                });
                self.sleep(remaining).map_err(conv)?;
                let name = slot.to_string();
                if let Some((from, reason)) = last.take() {
                    if from != name {
                        self.fallback(&from, &name, &reason, emit);
                    }
                }
                let ckey = self.cooldown_key(i);
                self.cooldowns.succeed(&ckey);
                match self.try_slot(i, step, base, true, emit) {
                    Ok(resp) => {
                        self.active = i;
                        return Ok((resp, i));
                    }
                    Err(SlotError::Overflow) => return Err(CallError::Overflow { slot: i }),
                    Err(SlotError::Failed {
                        reason,
                        retry_after,
                        cool,
                        ..
                    }) => {
                        if cool {
                            self.cooldowns
                                .fail(&ckey, reason, retry_after, Instant::now());
                        }
                    }
                    Err(e) => return Err(conv(e)),
                }
            }
        }
        Err(CallError::AllFailed)
    }

    fn fallback(&mut self, from: &str, to: &str, reason: &str, emit: &mut dyn FnMut(RunEvent)) {
        self.notes.push((
            format!("falling back from {from} to {to} ({reason})"),
            "fallback".into(),
        ));
        log::info!(target: "agent", workspace = self.scope.as_str(); "falling back from {from} to {to} ({reason})");
        emit(RunEvent::Fallback {
            from: from.to_string(),
            to: to.to_string(),
            reason: reason.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldowns_expire_and_probe_near_the_end() {
        let c = Cooldowns::new();
        let t0 = Instant::now();
        c.fail(
            "ws\0a/m",
            FailoverReason::Overloaded,
            Some(Duration::from_secs(20)),
            t0,
        );
        assert_eq!(
            c.check("ws\0a/m", t0 + Duration::from_secs(1)),
            CooldownCheck::Cooling {
                remaining: Duration::from_secs(19),
                reason: FailoverReason::Overloaded
            }
        );
        // The last fifth (4 s of 20): probe once, then not again within 30 s.
        assert_eq!(
            c.check("ws\0a/m", t0 + Duration::from_secs(17)),
            CooldownCheck::Probe
        );
        assert!(matches!(
            c.check("ws\0a/m", t0 + Duration::from_secs(18)),
            CooldownCheck::Cooling { .. }
        ));
        assert_eq!(
            c.check("ws\0a/m", t0 + Duration::from_secs(21)),
            CooldownCheck::Ready
        );
        // A success ends it; formats never cool down; a longer cooldown is kept.
        c.fail("k", FailoverReason::Billing, None, t0);
        c.fail(
            "k",
            FailoverReason::RateLimit,
            Some(Duration::from_secs(1)),
            t0,
        );
        assert!(matches!(
            c.check("k", t0 + Duration::from_secs(60)),
            CooldownCheck::Cooling {
                reason: FailoverReason::Billing,
                ..
            }
        ));
        c.succeed("k");
        assert_eq!(c.check("k", t0), CooldownCheck::Ready);
        c.fail("f", FailoverReason::Format, None, t0);
        assert_eq!(c.check("f", t0), CooldownCheck::Ready);
    }

    #[test]
    fn no_key_message_names_the_variables_and_the_command() {
        let m = no_key_message("google", "acme");
        assert!(m.contains("GEMINI_API_KEY or GOOGLE_API_KEY"), "{m}");
        assert!(m.contains("bulkhead cred set acme google api_key="), "{m}");
    }
}
