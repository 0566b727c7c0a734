//! The agent loop of one run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::context::{
    add_usage, assemble, compaction_boundary, history_from_events, message_tokens,
    prune_tool_results, read_instructions, render_for_summary, summary_message, summary_request,
    tokens_for_chars, truncate_middle, CtxMessage, MEMORY_FLUSH_PROMPT, SUMMARY_SYSTEM,
};
use super::events::{RunEvent, RunOutcome, RunResult, ToolCallRecord};
use super::failover::{CallError, Caller, Cooldowns, Slot};
use super::hooks::{Gate, HookEvent, HookEventKind, HookSet, RESULT_PREVIEW_CHARS};
use super::subagents::ChildBudget;
use super::tools::{SandboxSlot, ToolContext, ToolKind, ToolOutput, ToolRegistry};
use super::{ProviderFactory, RunRequest, DEFAULT_SYSTEM_PROMPT};
use crate::error::{Error, Result};
use crate::llm::{ChatRequest, ChatResponse, KeyRing, Message, ModelRef, ToolCall};
use crate::platform::Workspace;
use crate::sessions::{generate_session_id, Event, SessionHandle, Usage};
use crate::util::cancel::CancelToken;

/// Everything a run needs before it starts.
pub(crate) struct Setup<'a> {
    pub ws: &'a Workspace,
    pub req: RunRequest,
    pub cooldowns: &'a Cooldowns,
    pub factory: &'a ProviderFactory<'a>,
    pub env: &'a (dyn Fn(&str) -> Option<String> + Sync + 'a),
}

struct Run<'a> {
    ws: &'a Workspace,
    req: RunRequest,
    tools: Arc<ToolRegistry>,
    caller: Caller<'a>,
    handle: SessionHandle,
    on_event: &'a mut dyn FnMut(&RunEvent),
    cancel: CancelToken,
    deadline: Option<Instant>,
    sandbox: SandboxSlot,
    run_id: String,
    sid: String,
    system: String,

    /// Summary of the last compaction (raw text).
    summary: Option<String>,
    /// The current request was folded into the summary.
    request_in_summary: bool,
    replaced_events: u64,
    compactions: u64,
    flushed_for: Option<u64>,
    msgs: Vec<CtxMessage>,
    /// (messages at the time, input tokens the provider reported) of the last call.
    reported: Option<(usize, u64)>,

    usage: Usage,
    cost_known: bool,
    session_usage_before: Usage,
    tool_records: Vec<ToolCallRecord>,
    steps: usize,
    answered_by: String,
    /// The text of the final (or, at the step limit, the last) reply.
    finish_text: Option<String>,
    started: Instant,
    /// Lifecycle hooks: the request's callbacks and the workspace's executables.
    hooks: HookSet,
    /// How subagents reach the models (the run's own factory, cooldowns and environment).
    factory: &'a ProviderFactory<'a>,
    cooldowns: &'a Cooldowns,
    env: &'a (dyn Fn(&str) -> Option<String> + Sync + 'a),
    /// Children started under the top-level run.
    budget: ChildBudget,
    /// This workspace's secrets (plus the operator's, when redacting): every event,
    /// transcript line and hook payload of the run is redacted with it, and no other
    /// workspace's secret is (one tenant's output never changes with another's secrets).
    redactor: crate::logging::Redactor,
    /// Keeps the workspace's secrets out of log lines for as long as the run lives.
    _live: crate::logging::LiveGuard,
    /// The request named its tools (children get the same registry).
    custom_tools: bool,
}

fn parse_model(s: &str) -> Result<ModelRef> {
    s.parse::<ModelRef>()
}

impl Setup<'_> {
    /// Runs the loop; `on_event` sees every event.
    pub(crate) fn run(self, on_event: &mut dyn FnMut(&RunEvent)) -> Result<RunResult> {
        let started = Instant::now();
        let Setup {
            ws,
            req,
            cooldowns,
            factory,
            env,
        } = self;
        let cfg = &ws.record().config;
        if req.message.trim().is_empty() {
            return Err(Error::Invalid("the message is empty".into()));
        }
        if req.max_steps == 0 {
            return Err(Error::Invalid("max steps must be at least 1".into()));
        }

        // 1. The model chain, checked against the context-window guard.
        let primary_s = req.model.clone().or_else(|| cfg.model.clone()).ok_or_else(|| {
            Error::Invalid(format!(
                "no model for workspace {:?}: give --model provider/model (e.g. anthropic/claude-sonnet-4-5), \
                 or set one with `bulkhead workspace create {} --model …`",
                ws.id(),
                ws.id()
            ))
        })?;
        let primary = parse_model(&primary_s)?;
        let fallback_s = req
            .fallbacks
            .clone()
            .unwrap_or_else(|| cfg.fallbacks.clone());
        let mut chain = vec![primary.clone()];
        for f in &fallback_s {
            let m = parse_model(f)?;
            if !chain.contains(&m) {
                chain.push(m);
            }
        }
        let base_url = req
            .base_url
            .clone()
            .or_else(|| cfg.base_url.clone())
            .filter(|u| !u.trim().is_empty());
        if let Some(u) = &base_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(Error::Invalid(format!(
                    "invalid base URL {u:?}: expected http:// or https://"
                )));
            }
        }
        let ctx_cfg = &req.context;
        let mut warnings = Vec::new();
        let mut slots = Vec::new();
        for (i, m) in chain.into_iter().enumerate() {
            let window = ctx_cfg.context_window.unwrap_or_else(|| m.context_window());
            if window < ctx_cfg.min_tokens {
                let msg = format!(
                    "{m} has a context window of {window} tokens, below the minimum of {} \
                     (too small to run an agent; pick a larger model)",
                    ctx_cfg.min_tokens
                );
                if i == 0 {
                    return Err(Error::Invalid(msg));
                }
                warnings.push(format!("fallback dropped: {msg}"));
                continue;
            }
            if window < ctx_cfg.warn_below_tokens {
                warnings.push(format!(
                    "{m} has a small context window ({window} tokens, below {}): long tasks will be compacted often",
                    ctx_cfg.warn_below_tokens
                ));
            }
            // The explicit base URL (request or workspace) belongs to the primary's provider;
            // other providers use their own variables and defaults.
            let explicit = (m.provider == primary.provider)
                .then_some(base_url.as_deref())
                .flatten();
            match factory(&m, explicit) {
                Ok(provider) => slots.push(Slot {
                    model: m,
                    provider,
                    window,
                }),
                Err(e) if i == 0 => return Err(e),
                Err(e) => warnings.push(format!("fallback {m} dropped: {e}")),
            }
        }

        // 2. Keys: the workspace's credential store (when the passphrase was given), then
        //    the environment. Every key is registered as a secret here, before any tool runs.
        let store = match &req.credential_key {
            Some(k) => Some(ws.credentials(k)?),
            None => None,
        };
        let mut rings = HashMap::new();
        for s in &slots {
            rings.entry(s.model.provider.clone()).or_insert_with(|| {
                KeyRing::resolve(&s.model.provider, store.as_ref(), &|n| env(n))
            });
        }
        let redactor = store
            .as_ref()
            .map(crate::creds::CredentialStore::redactor)
            .unwrap_or_default();
        let live = redactor.live();
        drop(store);

        // 3. The session, locked for the whole run.
        let sessions = ws.sessions();
        let handle = match &req.session {
            Some(s) => sessions.open_or_create(s, req.lock)?,
            None => sessions.create(None, req.lock)?,
        };
        let sid = handle.sid().to_string();
        let transcript = handle.read()?;
        let new_session = transcript.events.is_empty();
        let history = history_from_events(&transcript.events);

        let cancel = req.cancel.clone().unwrap_or_default();
        // A limit past what an Instant holds is no limit (no overflow panic).
        let deadline = req.timeouts.run.and_then(|d| started.checked_add(d));
        let tools = match req.tools.clone() {
            Some(t) => t,
            None => Arc::new(default_tools(
                ws,
                req.credential_key.clone(),
                req.depth,
                req.subagents.max_depth,
            )),
        };
        let custom_tools = req.tools.is_some();
        let budget = req.subagent_budget.clone().unwrap_or_default();
        let run_id = format!("run-{}", generate_session_id());
        let caller = Caller {
            slots,
            rings,
            cooldowns,
            scope: ws.id().to_string(),
            policy: req.retry,
            cancel: cancel.clone(),
            deadline,
            attempts: Vec::new(),
            notes: Vec::new(),
            active: 0,
        };
        let system = system_prompt(ws, &req, &tools);
        let limits = req.limits.clone();
        let mut hooks = HookSet::new(&req.hooks, &cfg.hooks);
        hooks.set_deadline(deadline);
        let mut run = Run {
            ws,
            tools,
            caller,
            handle,
            on_event,
            cancel,
            deadline,
            sandbox: SandboxSlot::new(limits),
            run_id,
            sid,
            system,
            summary: history.summary.clone(),
            request_in_summary: false,
            replaced_events: history.replaced_events,
            compactions: history.compactions,
            flushed_for: None,
            msgs: history.messages,
            reported: None,
            usage: Usage::default(),
            cost_known: true,
            session_usage_before: history.usage,
            tool_records: Vec::new(),
            steps: 0,
            answered_by: String::new(),
            finish_text: None,
            started,
            hooks,
            factory,
            cooldowns,
            env,
            budget,
            custom_tools,
            redactor,
            _live: live,
            req,
        };
        let history_messages = run.msgs.len();
        run.emit(RunEvent::RunStart {
            run_id: run.run_id.clone(),
            workspace: run.ws.id().to_string(),
            session: run.sid.clone(),
            model: primary.to_string(),
            fallbacks: run.caller.slots[1..]
                .iter()
                .map(|s| s.model.to_string())
                .collect(),
            history_messages,
        });
        log::info!(
            target: "agent",
            workspace = run.ws.id(),
            session = run.sid.as_str();
            "run {} started with {primary}", run.run_id
        );
        for w in warnings {
            log::warn!(target: "agent", workspace = run.ws.id(); "{w}");
            run.emit(RunEvent::Warning { message: w });
        }
        run.fire(
            HookEventKind::SessionStart,
            serde_json::json!({ "new_session": new_session }),
        );
        let outcome = run.start(&primary).and_then(|()| {
            run.fire(
                HookEventKind::BeforeAgentStart,
                serde_json::json!({ "message": run.req.message, "model": primary.to_string() }),
            );
            run.steps_loop()
        });
        run.finish(outcome)
    }
}

/// The system prompt: the caller's (or the default), the environment, the operator's
/// `instructions.md`, the tenant's `/workspace/AGENTS.md`, and the registry's sections.
fn system_prompt(ws: &Workspace, req: &RunRequest, tools: &ToolRegistry) -> String {
    let mut s = req
        .system_prompt
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string());
    if !tools.is_empty() {
        s.push_str(&format!(
            "\n\n# Environment\nYou work in a sandboxed Linux workspace: your files are in /workspace \
             (the working directory), /tmp is scratch space, the rest of the system is read-only, and \
             there is no network except loopback. Your tools: {}. Use them to act; when the task is \
             done, answer the user without calling a tool.",
            tools.names().join(", ")
        ));
    }
    if let Some(t) = read_instructions(&ws.dir().join("instructions.md")) {
        s.push_str("\n\n# Workspace instructions\n");
        s.push_str(&t);
    }
    if let Some(t) = read_instructions(&ws.files_dir().join("AGENTS.md")) {
        s.push_str("\n\n# Project instructions (from /workspace/AGENTS.md)\n");
        s.push_str(&t);
    }
    for sec in tools.prompt_sections() {
        s.push_str(&format!("\n\n# {}\n{}", sec.title, sec.body));
    }
    s
}

/// Removes the run's secrets from a reply: a model that somehow saw a key (it never should)
/// cannot write it into the transcript, an event or a tool's arguments. The arguments are
/// redacted value by value, before serialization.
fn redact_response(resp: &mut ChatResponse, r: &crate::logging::Redactor) {
    resp.text = r.redact(&resp.text);
    for c in &mut resp.tool_calls {
        r.redact_json(&mut c.arguments);
    }
}

fn stop_error(e: CallError, attempts: &[super::Attempt], deadline_secs: f64) -> Error {
    match e {
        CallError::Cancelled => Error::Cancelled("the run was cancelled".into()),
        CallError::TimedOut => Error::RunTimedOut(deadline_secs),
        CallError::AllFailed | CallError::Overflow { .. } => Error::AllModelsFailed {
            attempts: attempts.to_vec(),
        },
    }
}

impl Run<'_> {
    fn emit(&mut self, mut e: RunEvent) {
        e.redact(&self.redactor);
        (self.on_event)(&e);
    }

    fn hook_event(&self, kind: HookEventKind, mut data: Value) -> HookEvent {
        self.redactor.redact_json(&mut data);
        HookEvent {
            event: kind,
            workspace: self.ws.id().to_string(),
            session: self.sid.clone(),
            run_id: self.run_id.clone(),
            data: match data {
                Value::Object(m) => m,
                _ => Default::default(),
            },
        }
    }

    fn emit_hook_reports(&mut self, reports: Vec<super::hooks::HookReport>, call_id: Option<&str>) {
        for r in reports {
            self.emit(RunEvent::Hook {
                hook: r.hook,
                event: r.event,
                decision: r.decision,
                reason: r.reason,
                call_id: call_id.map(str::to_string),
                duration_ms: r.duration_ms,
            });
        }
    }

    /// Fires a notification event at the hooks (their decisions are reported, not acted on).
    fn fire(&mut self, kind: HookEventKind, data: Value) {
        if self.hooks.is_empty() {
            return;
        }
        let ev = self.hook_event(kind, data);
        let call_id = ev
            .get("call_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut reports = Vec::new();
        self.hooks.notify(&ev, &mut |r| reports.push(r));
        self.emit_hook_reports(reports, call_id.as_deref());
    }

    /// `before_tool_call`: the arguments to run the call with, or the refusal the model
    /// gets (also recorded in the transcript as an `error` of kind `hook`).
    fn gate_tool(&mut self, step: usize, call: &ToolCall) -> std::result::Result<Value, String> {
        if self.hooks.is_empty() {
            return Ok(call.arguments.clone());
        }
        let ev = self.hook_event(
            HookEventKind::BeforeToolCall,
            serde_json::json!({
                "step": step,
                "call_id": call.id,
                "tool": call.name,
                "arguments": call.arguments,
            }),
        );
        let mut reports = Vec::new();
        let gate = self.hooks.gate(&ev, &mut |r| reports.push(r));
        self.emit_hook_reports(reports, Some(&call.id));
        match gate {
            Gate::Run(args) => Ok(args),
            Gate::Refuse(msg) => {
                let msg = self.redactor.redact(&msg);
                log::warn!(target: "hooks", workspace = self.ws.id(), session = self.sid.as_str(); "tool call {} ({}) {msg}", call.id, call.name);
                if let Err(e) = self.push(Event::error(msg.clone(), "hook")) {
                    log::warn!(target: "agent", "transcript: {e}");
                }
                Err(msg)
            }
        }
    }

    /// `after_tool_call`, with the result cut to [`RESULT_PREVIEW_CHARS`].
    fn after_tool(&mut self, step: usize, call: &ToolCall, out: &ToolOutput, truncated: bool) {
        if self.hooks.is_empty() {
            return;
        }
        let (preview, cut) = truncate_middle(&out.content, RESULT_PREVIEW_CHARS);
        self.fire(
            HookEventKind::AfterToolCall,
            serde_json::json!({
                "step": step,
                "call_id": call.id,
                "tool": call.name,
                "arguments": call.arguments,
                "result": preview,
                "is_error": out.is_error,
                "truncated": truncated || cut,
            }),
        );
    }

    /// Runs one call through the hooks and the tool.
    fn gated_exec(
        &mut self,
        step: usize,
        call: &ToolCall,
        tools: &ToolRegistry,
    ) -> Result<(ToolCall, ToolOutput, bool)> {
        let mut call = call.clone();
        let r = match self.gate_tool(step, &call) {
            Ok(args) => {
                call.arguments = args;
                self.emit(RunEvent::ToolCall {
                    step,
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                });
                self.exec_tool(step, &call, tools)?
            }
            Err(msg) => {
                self.emit(RunEvent::ToolCall {
                    step,
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                });
                (ToolOutput::error(msg), false)
            }
        };
        self.after_tool(step, &call, &r.0, r.1);
        Ok((call, r.0, r.1))
    }

    fn run_secs(&self) -> f64 {
        self.req.timeouts.run.map_or(0.0, |d| d.as_secs_f64())
    }

    fn check_stop(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled("the run was cancelled".into()));
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::RunTimedOut(self.run_secs()));
        }
        Ok(())
    }

    fn push(&mut self, e: Event) -> Result<()> {
        let e = e.with_run_id(self.run_id.clone());
        self.handle.push(e)
    }

    /// `run_start` and the user's message, committed at once.
    fn start(&mut self, primary: &ModelRef) -> Result<()> {
        self.handle.push(Event::RunStart {
            ts: String::new(),
            run_id: self.run_id.clone(),
            model: Some(primary.to_string()),
            provider: Some(primary.provider.clone()),
        })?;
        self.push(Event::user_message(self.req.message.clone()))?;
        self.handle.commit()?;
        self.msgs.push(CtxMessage::new(Message::User {
            text: self.req.message.clone(),
        }));
        Ok(())
    }

    fn drain_notes(&mut self) {
        for (msg, kind) in std::mem::take(&mut self.caller.notes) {
            if let Err(e) = self.push(Event::error(msg, kind)) {
                log::warn!(target: "agent", "transcript: {e}");
            }
        }
    }

    fn messages(&self) -> Vec<Message> {
        let summary = self.summary.as_deref().map(|s| {
            summary_message(
                s,
                self.request_in_summary.then_some(self.req.message.as_str()),
            )
        });
        assemble(summary.as_deref(), &self.msgs)
    }

    fn request(&self, tools: &ToolRegistry, stream: bool) -> ChatRequest {
        ChatRequest {
            model: String::new(),
            system: self.system.clone(),
            messages: self.messages(),
            tools: tools.specs(),
            max_tokens: self.req.context.max_output_tokens,
            temperature: None,
            stream,
            deadline: None,
        }
    }

    /// Estimated tokens of the next request.
    fn estimate(&self) -> u64 {
        let fixed = tokens_for_chars(
            self.system.chars().count()
                + self
                    .tools
                    .specs()
                    .iter()
                    .map(|t| t.description.len() + t.input_schema.to_string().len())
                    .sum::<usize>()
                + self.summary.as_ref().map_or(0, |s| s.chars().count()),
        );
        let est = fixed
            + self
                .msgs
                .iter()
                .map(|m| message_tokens(&m.msg))
                .sum::<u64>();
        match self.reported {
            Some((n, input)) if n <= self.msgs.len() => {
                let added: u64 = self.msgs[n..].iter().map(|m| message_tokens(&m.msg)).sum();
                est.max(input + added)
            }
            _ => est,
        }
    }

    fn account(&mut self, resp: &ChatResponse, slot: usize) {
        let model = &self.caller.slots[slot].model;
        let cost = super::pricing::cost_usd(
            &model.model,
            resp.usage.input_tokens,
            resp.usage.output_tokens,
        );
        self.usage.input_tokens += resp.usage.input_tokens;
        self.usage.output_tokens += resp.usage.output_tokens;
        match cost {
            Some(c) if self.cost_known => {
                self.usage.cost_usd = Some(self.usage.cost_usd.unwrap_or(0.0) + c)
            }
            _ => {
                self.cost_known = false;
                self.usage.cost_usd = None;
            }
        }
    }

    /// Prunes old tool results, then compacts, when the estimate passes the thresholds.
    fn fit_context(&mut self) -> Result<()> {
        let window = u64::from(self.caller.slots[self.caller.active].window);
        let budget = window.saturating_sub(u64::from(self.req.context.max_output_tokens));
        let est = self.estimate();
        let prune_target = (budget as f64 * self.req.context.prune_at) as u64;
        let mut now = est;
        if est > prune_target {
            let (n, after) = prune_tool_results(&mut self.msgs, est, prune_target);
            if n > 0 {
                self.reported = None;
                now = after;
                self.emit(RunEvent::ContextPruned {
                    results: n,
                    tokens_before: est,
                    tokens_after: after,
                });
            }
        }
        if now > (budget as f64 * self.req.context.compact_at) as u64 {
            let active = self.caller.active;
            if !self.compact("threshold", active)? {
                let msg = format!(
                    "the context (about {now} tokens) is near the model's window ({window}) and cannot be compacted further"
                );
                self.emit(RunEvent::Warning { message: msg });
            }
        }
        Ok(())
    }

    /// One model call of a step, compacting on a context overflow.
    fn call_step(&mut self, step: usize) -> Result<(ChatResponse, usize)> {
        let mut exclude: Vec<usize> = Vec::new();
        let mut compacted = 0;
        loop {
            self.check_stop()?;
            let req = self.request(&self.tools.clone(), self.req.stream);
            let n_msgs = self.msgs.len();
            let (on_event, red) = (&mut *self.on_event, &self.redactor);
            let r = self.caller.call(step, &req, &exclude, &mut |mut e| {
                e.redact(red);
                on_event(&e)
            });
            self.drain_notes();
            match r {
                Ok((mut resp, slot)) => {
                    redact_response(&mut resp, &self.redactor);
                    self.account(&resp, slot);
                    self.reported = Some((n_msgs, resp.usage.input_tokens));
                    self.answered_by = self.caller.slots[slot].model.to_string();
                    return Ok((resp, slot));
                }
                Err(CallError::Overflow { slot }) => {
                    if compacted < 2 && self.compact("overflow", slot)? {
                        compacted += 1;
                        continue;
                    }
                    let name = self.caller.slots[slot].model.to_string();
                    self.emit(RunEvent::Warning {
                        message: format!(
                            "{name}: the context does not fit and cannot be compacted further; trying the next model"
                        ),
                    });
                    exclude.push(slot);
                }
                Err(e) => return Err(stop_error(e, &self.caller.attempts, self.run_secs())),
            }
        }
    }

    /// The memory-flush turn before a compaction: once per compaction of the session, and
    /// only when memory tools are registered.
    fn memory_flush(&mut self) -> Result<()> {
        let mem = self.tools.only(ToolKind::Memory);
        if mem.is_empty() {
            // No memory tool is registered (memory tools plug in as `ToolKind::Memory`):
            // the model would have nothing to save with, so the flush turn is skipped.
            return Ok(());
        }
        if self.flushed_for == Some(self.compactions) {
            return Ok(());
        }
        self.flushed_for = Some(self.compactions);
        let mut req = self.request(&mem, false);
        match req.messages.last_mut() {
            Some(Message::User { text }) => {
                text.push_str("\n\n");
                text.push_str(MEMORY_FLUSH_PROMPT);
            }
            _ => req.messages.push(Message::User {
                text: MEMORY_FLUSH_PROMPT.into(),
            }),
        }
        let (on_event, red) = (&mut *self.on_event, &self.redactor);
        let r = self.caller.call(0, &req, &[], &mut |mut e| {
            e.redact(red);
            on_event(&e)
        });
        self.drain_notes();
        let (resp, slot) = match r {
            Ok(ok) => ok,
            Err(CallError::Cancelled) => {
                return Err(Error::Cancelled("the run was cancelled".into()))
            }
            Err(CallError::TimedOut) => return Err(Error::RunTimedOut(self.run_secs())),
            Err(_) => {
                self.emit(RunEvent::Warning {
                    message: "the memory flush before compaction failed; compacting anyway".into(),
                });
                return Ok(());
            }
        };
        let mut resp = resp;
        redact_response(&mut resp, &self.redactor);
        self.account(&resp, slot);
        let mut n = 0;
        // The flush is one turn outside the conversation: its calls run, their results
        // are not sent back, and none of it enters the transcript (the memory itself is
        // the record).
        for c in &resp.tool_calls {
            if mem.get(&c.name).is_none() {
                continue;
            }
            let (_, out, _) = self.gated_exec(0, c, &mem)?;
            self.emit(RunEvent::ToolResult {
                step: 0,
                call_id: c.id.clone(),
                name: c.name.clone(),
                output: out.content,
                is_error: out.is_error,
                truncated: false,
                duration_ms: 0,
            });
            n += 1;
        }
        self.emit(RunEvent::MemoryFlush { tool_calls: n });
        Ok(())
    }

    /// Summarizes older turns with the model; `false` when there is nothing to compact or
    /// the summary could not be made.
    fn compact(&mut self, trigger: &str, slot: usize) -> Result<bool> {
        let window = u64::from(self.caller.slots[slot].window);
        let keep = if trigger == "overflow" {
            // The provider said it does not fit, so our estimate is off: keep only the
            // last turn.
            0
        } else {
            (window as f64 * self.req.context.keep_recent) as u64
        };
        let Some(b) = compaction_boundary(&self.msgs, keep) else {
            return Ok(false);
        };
        if trigger != "overflow" {
            // Only before an estimated (not an actual) overflow: a flush turn would carry
            // the same too-long prompt.
            self.memory_flush()?;
        }
        let before = self.estimate();
        let rendered = render_for_summary(
            self.summary.as_deref(),
            &self.msgs[..b],
            (window as usize).saturating_mul(2),
        );
        let sreq = ChatRequest {
            model: String::new(),
            system: SUMMARY_SYSTEM.into(),
            messages: vec![Message::User {
                text: summary_request(&rendered),
            }],
            tools: Vec::new(),
            max_tokens: 2048.min(self.req.context.max_output_tokens.max(512)),
            temperature: None,
            stream: false,
            deadline: None,
        };
        let (on_event, red) = (&mut *self.on_event, &self.redactor);
        let r = self.caller.call(0, &sreq, &[], &mut |mut e| {
            e.redact(red);
            on_event(&e)
        });
        self.drain_notes();
        let (resp, rslot) = match r {
            Ok(ok) => ok,
            Err(CallError::Overflow { .. }) => return Ok(false),
            Err(e) => return Err(stop_error(e, &self.caller.attempts, self.run_secs())),
        };
        self.account(&resp, rslot);
        let text = self.redactor.redact(resp.text.trim());
        if text.is_empty() {
            return Ok(false);
        }
        // The current request is at index `len - k` for some k; it is folded into the
        // summary when it is among the replaced messages.
        let current_idx = self
            .msgs
            .iter()
            .rposition(|m| matches!(&m.msg, Message::User { text } if text == &self.req.message));
        if current_idx.is_some_and(|i| i < b) {
            self.request_in_summary = true;
        }
        let replaced: u64 = self.msgs[..b].iter().map(|m| m.events).sum();
        self.replaced_events += replaced;
        self.msgs.drain(..b);
        self.summary = Some(text.clone());
        self.compactions += 1;
        self.reported = None;
        self.push(Event::compaction(text.clone(), self.replaced_events))?;
        self.handle.commit()?;
        let after = self.estimate();
        self.emit(RunEvent::Compaction {
            trigger: trigger.into(),
            replaced_messages: b,
            tokens_before: before,
            tokens_after: after,
            summary_chars: text.chars().count(),
        });
        log::info!(target: "agent", workspace = self.ws.id(), session = self.sid.as_str(); "compacted {b} messages ({trigger})");
        Ok(true)
    }

    /// Runs one tool call: unknown tools and invalid arguments are error results, never a
    /// crash. Returns the output (redacted, truncated) and whether it was truncated.
    fn exec_tool(
        &mut self,
        _step: usize,
        call: &ToolCall,
        tools: &ToolRegistry,
    ) -> Result<(ToolOutput, bool)> {
        let out = self.exec_tool_inner(call, tools)?;
        let content = self.redactor.redact(&out.content);
        let (content, truncated) =
            truncate_middle(&content, self.req.context.tool_result_max_chars);
        Ok((
            ToolOutput {
                content,
                is_error: out.is_error,
            },
            truncated,
        ))
    }

    fn exec_tool_inner(&mut self, call: &ToolCall, tools: &ToolRegistry) -> Result<ToolOutput> {
        let (tool, args) = match super::tools::resolve_call(tools, &call.name, &call.arguments) {
            Ok(found) => found,
            Err(refused) => return Ok(refused),
        };
        if tool.is_subagent_spawner() {
            return Ok(self.spawn_subagents(&args));
        }
        let mut ctx = ToolContext {
            workspace: self.ws,
            sandbox: &mut self.sandbox,
            cancel: &self.cancel,
            run_id: &self.run_id,
            session: &self.sid,
            default_timeout: self.req.timeouts.tool_default,
            max_timeout: self.req.timeouts.tool_max,
            deadline: self.deadline,
        };
        match tool.call(&args, &mut ctx) {
            Ok(o) => Ok(o),
            Err(e) => {
                self.check_stop()?;
                match e {
                    Error::Setup(_)
                    | Error::Attestation(_)
                    | Error::Launcher(_)
                    | Error::Cancelled(_) => Err(e),
                    Error::SandboxGone(_) | Error::Protocol(_) | Error::SandboxTimedOut(_) => {
                        log::warn!(target: "agent", workspace = self.ws.id(), tool = call.name.as_str(); "tool call failed: {e}");
                        self.sandbox.discard();
                        Ok(ToolOutput::error(format!(
                            "{}; a new sandbox will be started for the next call (files in /workspace are kept)",
                            super::tools::model_error_text(&e, self.ws)
                        )))
                    }
                    other => {
                        // The operator gets the whole error; the model no host path.
                        log::warn!(target: "agent", workspace = self.ws.id(), tool = call.name.as_str(); "tool call failed: {other}");
                        Ok(ToolOutput::error(super::tools::model_error_text(
                            &other, self.ws,
                        )))
                    }
                }
            }
        }
    }

    /// `spawn_subagents`: runs the children (the run's settings, one level deeper) and adds
    /// their usage to the run's.
    fn spawn_subagents(&mut self, args: &Value) -> ToolOutput {
        let parent = super::subagents::Parent {
            ws: self.ws,
            req: &self.req,
            run_id: Some(&self.run_id),
            session: Some(&self.sid),
            cancel: Some(&self.cancel),
            deadline: self.deadline,
            budget: &self.budget,
            tools: self.custom_tools.then_some(&self.tools),
            factory: self.factory,
            cooldowns: self.cooldowns,
            env: self.env,
        };
        let (on_event, red) = (&mut *self.on_event, &self.redactor);
        let (out, usage) = super::subagents::run_tool(&parent, args, &mut |e| {
            let mut e = e.clone();
            e.redact(red);
            on_event(&e)
        });
        add_usage(&mut self.usage, &usage);
        out
    }

    fn steps_loop(&mut self) -> Result<RunOutcome> {
        let mut last_text = String::new();
        for step in 1..=self.req.max_steps {
            self.check_stop()?;
            self.fit_context()?;
            let (resp, _slot) = self.call_step(step)?;
            self.steps = step;
            let ChatResponse {
                text, tool_calls, ..
            } = resp;
            self.emit(RunEvent::AssistantMessage {
                step,
                text: text.clone(),
                tool_calls: tool_calls.len(),
                model: self.answered_by.clone(),
            });
            if !text.is_empty() || tool_calls.is_empty() {
                self.push(Event::assistant_message(text.clone()))?;
            }
            for c in &tool_calls {
                self.push(Event::tool_call(
                    c.id.clone(),
                    c.name.clone(),
                    c.arguments.clone(),
                ))?;
            }
            self.msgs.push(CtxMessage::new(Message::Assistant {
                text: text.clone(),
                tool_calls: tool_calls.clone(),
            }));
            if tool_calls.is_empty() {
                self.handle.commit()?;
                self.finish_text = Some(text);
                return Ok(RunOutcome::Completed);
            }
            let tools = Arc::clone(&self.tools);
            for c in &tool_calls {
                self.check_stop()?;
                let t0 = Instant::now();
                let (effective, out, truncated) = self.gated_exec(step, c, &tools)?;
                let took = t0.elapsed();
                log::debug!(target: "agent", workspace = self.ws.id(), session = self.sid.as_str(); "tool {} {} in {:?}", c.name, if out.is_error { "failed" } else { "ok" }, took);
                self.emit(RunEvent::ToolResult {
                    step,
                    call_id: c.id.clone(),
                    name: c.name.clone(),
                    output: out.content.clone(),
                    is_error: out.is_error,
                    truncated,
                    duration_ms: took.as_millis() as u64,
                });
                self.push(Event::tool_result(
                    c.id.clone(),
                    out.content.clone(),
                    out.is_error,
                ))?;
                self.tool_records.push(ToolCallRecord {
                    step,
                    call_id: c.id.clone(),
                    name: c.name.clone(),
                    arguments: effective.arguments,
                    is_error: out.is_error,
                    output_chars: out.content.chars().count(),
                    truncated,
                    duration: took,
                });
                self.msgs.push(CtxMessage::new(Message::ToolResult {
                    call_id: c.id.clone(),
                    name: c.name.clone(),
                    content: out.content,
                    is_error: out.is_error,
                }));
            }
            self.handle.commit()?;
            last_text = text;
        }
        self.finish_text = Some(last_text);
        Ok(RunOutcome::MaxSteps)
    }

    fn finish(mut self, outcome: Result<RunOutcome>) -> Result<RunResult> {
        self.sandbox.shutdown();
        self.drain_notes();
        // Provider messages are scrubbed of the key and the operator's secrets only; the
        // workspace's own secrets (a model server echoing a request) go here, before the
        // attempts reach the result, the error or the caller.
        let redact_attempts = |r: &crate::logging::Redactor, list: &mut [super::Attempt]| {
            for m in list.iter_mut().filter_map(|a| a.message.as_mut()) {
                *m = r.redact(m);
            }
        };
        redact_attempts(&self.redactor, &mut self.caller.attempts);
        let outcome = outcome.map_err(|e| match e {
            Error::AllModelsFailed { mut attempts } => {
                redact_attempts(&self.redactor, &mut attempts);
                Error::AllModelsFailed { attempts }
            }
            e => e,
        });
        if let Some(d) = self.deadline {
            // The end-of-run hooks still run after a timeout, for a bounded while.
            self.hooks
                .set_deadline(Some(d.max(Instant::now()) + super::hooks::END_OF_RUN_GRACE));
        }
        let (state, error_kind) = match &outcome {
            Ok(o) => (*o, None),
            Err(Error::AllModelsFailed { .. }) => (RunOutcome::Failed, Some("llm")),
            Err(Error::Cancelled(_)) => (RunOutcome::Cancelled, Some("cancelled")),
            Err(Error::RunTimedOut(_)) => (RunOutcome::TimedOut, Some("timeout")),
            Err(_) => (RunOutcome::Failed, Some("run")),
        };
        let error = outcome
            .as_ref()
            .err()
            .map(|e| self.redactor.redact(&e.to_string()));
        if let (Some(msg), Some(kind)) = (&error, error_kind) {
            let _ = self.push(Event::error(msg.clone(), kind));
            self.fire(
                HookEventKind::OnError,
                serde_json::json!({ "kind": kind, "message": msg }),
            );
        }
        self.fire(
            HookEventKind::AfterAgentEnd,
            serde_json::json!({
                "outcome": state.as_str(),
                "usage": self.usage,
                "steps": self.steps,
                "tool_calls": self.tool_records.len(),
            }),
        );
        self.fire(
            HookEventKind::SessionEnd,
            serde_json::json!({ "outcome": state.as_str() }),
        );
        let response = match state {
            RunOutcome::Completed | RunOutcome::MaxSteps => {
                self.finish_text.clone().unwrap_or_default()
            }
            _ => String::new(),
        };
        let mut session_usage = self.session_usage_before.clone();
        add_usage(&mut session_usage, &self.usage);
        let end = Event::run_end(self.run_id.clone(), self.usage.clone(), state.as_str());
        let committed = self
            .handle
            .push(end)
            .and_then(|()| self.handle.commit().map(drop));
        if let Err(e) = &committed {
            log::warn!(target: "agent", workspace = self.ws.id(), session = self.sid.as_str(); "could not record the end of run {}: {e}", self.run_id);
        }
        log::info!(
            target: "agent",
            workspace = self.ws.id(),
            session = self.sid.as_str();
            "run {} ended: {} ({} steps, {} in / {} out tokens)",
            self.run_id, state.as_str(), self.steps, self.usage.input_tokens, self.usage.output_tokens
        );
        self.emit(RunEvent::RunEnd {
            run_id: self.run_id.clone(),
            session: self.sid.clone(),
            outcome: state,
            response: response.clone(),
            usage: self.usage.clone(),
            session_usage: session_usage.clone(),
            steps: self.steps,
            attempts: self.caller.attempts.len(),
            tool_calls: self.tool_records.len(),
            error,
            duration_ms: self.started.elapsed().as_millis() as u64,
        });
        let outcome = outcome?;
        committed?;
        Ok(RunResult {
            run_id: self.run_id.clone(),
            session: self.sid.clone(),
            response,
            outcome,
            usage: self.usage.clone(),
            session_usage,
            attempts: std::mem::take(&mut self.caller.attempts),
            tool_calls: std::mem::take(&mut self.tool_records),
            steps: self.steps,
            model: self.answered_by.clone(),
        })
    }
}

/// The tools of a run that names none: the built-in ones, `spawn_subagents` while the run's
/// depth is below `max_depth`, and `skill_list` / `skill_execute` with the enabled skills
/// described in the prompt when the workspace has any enabled (read from its config on the
/// host; the sandbox cannot change it).
fn default_tools(
    ws: &Workspace,
    key: Option<crate::creds::CredentialKey>,
    depth: usize,
    max_depth: usize,
) -> ToolRegistry {
    let mut reg = ToolRegistry::builtin();
    if depth < max_depth {
        reg.register(Arc::new(super::subagents::SpawnSubagentsTool))
            .expect("spawn_subagents is a valid, unique tool name");
    }
    let registry = crate::skills::Registry::new(ws.state_root().join("skills"));
    match crate::skills::tools::prompt_section(&registry, ws) {
        Ok(Some((title, body))) => {
            for t in crate::skills::tools::skill_tools(registry, key) {
                if let Err(e) = reg.register(t) {
                    log::warn!(target: "agent", "skill tool not registered: {e}");
                }
            }
            reg.add_prompt_section(title, body);
        }
        Ok(None) => {}
        Err(e) => {
            log::warn!(target: "agent", workspace = ws.id(); "skills unavailable for this run: {e}");
        }
    }
    reg
}
