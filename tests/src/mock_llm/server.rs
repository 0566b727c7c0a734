//! The accept loop and one thread per connection: route, pick a step, record, answer.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::{self, ReadError, Request};
use super::script::{Action, Api, Fault, Match, Reply, Step};
use super::wire::{self, Ctx, ErrorResp, Event};
use super::RecordedRequest;

/// A step and how often it has answered.
#[derive(Debug)]
pub(crate) struct Slot {
    pub step: Step,
    pub used: u64,
}

impl Slot {
    fn available(&self) -> bool {
        self.step.times.map_or(true, |n| self.used < n)
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub slots: Vec<Slot>,
    pub requests: Vec<RecordedRequest>,
}

#[derive(Debug, Default)]
pub(crate) struct Conns {
    next: u64,
    live: HashMap<u64, TcpStream>,
}

/// Everything the threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub changed: Condvar,
    pub stop: AtomicBool,
    pub conns: Mutex<Conns>,
    pub zero_latency: bool,
    pub verbose: bool,
}

/// Locks, ignoring poisoning (a panicking test thread must not hide the recordings).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(steps: Vec<Step>, zero_latency: bool, verbose: bool) -> Shared {
        Shared {
            state: Mutex::new(State {
                slots: steps
                    .into_iter()
                    .map(|step| Slot { step, used: 0 })
                    .collect(),
                requests: Vec::new(),
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Conns::default()),
            zero_latency,
            verbose,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sets the stop flag and shuts every live connection down (wakes blocked reads).
    pub fn shut_down(&self) {
        let conns = lock(&self.conns);
        self.stop.store(true, Ordering::SeqCst);
        for c in conns.live.values() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Sleeps `ms`, waking early (returning `false`) when the mock stops.
    fn sleep(&self, ms: u64) -> bool {
        let end = Instant::now() + Duration::from_millis(ms);
        loop {
            if self.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            thread::sleep((end - now).min(Duration::from_millis(10)));
        }
    }

    /// Picks the step for a request (when `pick`) and records the request, in one lock.
    /// Returns the request number and the step.
    fn record(
        &self,
        mut rec: RecordedRequest,
        pick: Option<&Info<'_>>,
    ) -> (u64, Option<(usize, Step)>) {
        let mut st = lock(&self.state);
        let seq = st.requests.len() as u64 + 1;
        let chosen = pick.and_then(|info| {
            let i = st
                .slots
                .iter()
                .position(|s| s.available() && matches(&s.step.when, info))?;
            st.slots[i].used += 1;
            Some((i, st.slots[i].step.clone()))
        });
        rec.seq = seq;
        if pick.is_some() {
            rec.step = chosen.as_ref().map(|(i, _)| *i);
            rec.outcome = match &chosen {
                Some((_, s)) => match &s.action {
                    Action::Reply(_) => "reply".into(),
                    Action::Fault(f) => format!("fault:{}", f.kind()),
                },
                None => "exhausted".into(),
            };
        }
        if self.verbose {
            eprintln!(
                "mock-llm: #{seq} {} {} {} model={} stream={} -> {}{}",
                rec.api.map_or("-", Api::name),
                rec.method,
                rec.path,
                rec.model.as_deref().unwrap_or("-"),
                rec.stream,
                rec.step.map_or(String::new(), |s| format!("step {s} ")),
                rec.outcome,
            );
        }
        st.requests.push(rec);
        drop(st);
        self.changed.notify_all();
        (seq, chosen)
    }
}

/// What a `match` is checked against.
#[derive(Debug)]
struct Info<'a> {
    api: Api,
    model: &'a str,
    key: Option<&'a str>,
    stream: bool,
    tool_result: bool,
    raw: &'a str,
}

fn matches(m: &Match, i: &Info<'_>) -> bool {
    m.model.as_deref().map_or(true, |x| x == i.model)
        && m.key.as_deref().map_or(true, |k| i.key == Some(k))
        && m.api.map_or(true, |a| a == i.api)
        && m.stream.map_or(true, |s| s == i.stream)
        && m.tool_result.map_or(true, |t| t == i.tool_result)
        && m.contains.as_deref().map_or(true, |c| i.raw.contains(c))
}

/// Accepts until stopped; joins the connection threads before returning.
pub(crate) fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    for s in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let Ok(s) = s else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let mut conns = lock(&shared.conns);
        if shared.stopping() {
            break;
        }
        let id = conns.next;
        conns.next += 1;
        match s.try_clone() {
            Ok(c) => {
                conns.live.insert(id, c);
            }
            Err(_) => continue,
        }
        drop(conns);
        let sh = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("mock-llm-conn-{id}"))
            .spawn(move || {
                handle_connection(&sh, s, id);
                lock(&sh.conns).live.remove(&id);
            });
        match spawned {
            Ok(h) => workers.push(h),
            Err(_) => {
                lock(&shared.conns).live.remove(&id);
            }
        }
        workers.retain(|w| !w.is_finished());
    }
    for w in workers {
        let _ = w.join();
    }
}

fn handle_connection(shared: &Shared, stream: TcpStream, conn: u64) {
    let _ = stream.set_nodelay(true);
    let Ok(rd) = stream.try_clone() else { return };
    let mut reader = BufReader::new(rd);
    let mut w = stream;
    loop {
        let mut cont = w.try_clone().ok();
        let req = match http::read_request(&mut reader, || match cont.as_mut() {
            Some(c) => http::send(c, b"HTTP/1.1 100 Continue\r\n\r\n"),
            None => Ok(()),
        }) {
            Ok(Some(r)) => r,
            Ok(None) | Err(ReadError::Io(_)) => return,
            Err(ReadError::Bad(msg)) => {
                let body = json!({"error": {"message": format!("mock: bad request: {msg}")}});
                let _ = http::send(
                    &mut w,
                    &http::full_response(400, &json_ct(), body.to_string().as_bytes(), false),
                );
                return;
            }
        };
        if shared.stopping() {
            return;
        }
        match respond(shared, &req, &mut w, conn) {
            Ok(true) => continue,
            Ok(false) | Err(_) => return,
        }
    }
}

fn json_ct() -> Vec<(String, String)> {
    vec![("content-type".into(), "application/json".into())]
}

/// The API and, for Gemini, the model and whether it streams, from the path.
fn route(path: &str) -> Option<(Api, Option<String>, bool)> {
    if path.ends_with("/messages") {
        return Some((Api::Anthropic, None, false));
    }
    if path.ends_with("/chat/completions") {
        return Some((Api::OpenAi, None, false));
    }
    let (_, rest) = path.rsplit_once("/models/")?;
    let (model, method) = rest.rsplit_once(':')?;
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    Some((Api::Gemini, Some(model.to_string()), stream))
}

fn bearer(req: &Request) -> Option<&str> {
    let v = req.header("authorization")?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn api_key(api: Api, req: &Request) -> Option<String> {
    match api {
        Api::Anthropic => req.header("x-api-key").or_else(|| bearer(req)),
        Api::OpenAi => bearer(req).or_else(|| req.header("api-key")),
        Api::Gemini => {
            return req
                .header("x-goog-api-key")
                .map(str::to_string)
                .or_else(|| req.query_param("key"))
        }
    }
    .map(str::to_string)
}

/// Answers one request; `Ok(true)` when the connection stays open.
fn respond(shared: &Shared, req: &Request, w: &mut TcpStream, conn: u64) -> io::Result<bool> {
    let keep = req.keep_alive();
    let raw = String::from_utf8_lossy(&req.body).into_owned();
    let parsed: Option<Value> = if req.body.is_empty() {
        None
    } else {
        serde_json::from_slice(&req.body).ok()
    };
    let mut rec = RecordedRequest {
        seq: 0,
        connection: conn,
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        body_text: raw.clone(),
        body: parsed.clone().unwrap_or(Value::Null),
        api: None,
        model: None,
        api_key: None,
        stream: false,
        step: None,
        outcome: String::new(),
    };

    let Some((api, path_model, gemini_stream)) = route(&req.path) else {
        rec.outcome = "no_route".into();
        shared.record(rec, None);
        let body = json!({"error": {"message":
            format!("mock-llm: no route for {} {}", req.method, req.path)}});
        http::send(
            w,
            &http::full_response(404, &json_ct(), body.to_string().as_bytes(), keep),
        )?;
        return Ok(keep);
    };
    let null = Value::Null;
    let body = parsed.as_ref().unwrap_or(&null);
    let model = path_model
        .or_else(|| {
            body.get("model")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "mock-model".into());
    let key = api_key(api, req);
    let stream = match api {
        Api::Gemini => gemini_stream,
        _ => body.get("stream").and_then(Value::as_bool) == Some(true),
    };
    let gemini_array =
        api == Api::Gemini && stream && req.query_param("alt").as_deref() != Some("sse");
    rec.api = Some(api);
    rec.model = Some(model.clone());
    rec.api_key = key.clone();
    rec.stream = stream;

    let mut ctx = Ctx {
        api,
        seq: 0,
        model: model.clone(),
        key: key.as_deref(),
        body,
        body_len: req.body.len(),
        gemini_array,
    };
    let early = if req.method != "POST" {
        Some((
            "bad_method",
            405,
            format!(
                "mock-llm: {} {} is not allowed, use POST",
                req.method, req.path
            ),
        ))
    } else if parsed.is_none() {
        Some((
            "invalid_json",
            400,
            "mock-llm: the request body is not valid JSON".to_string(),
        ))
    } else {
        None
    };
    if let Some((outcome, status, msg)) = early {
        rec.outcome = outcome.into();
        ctx.seq = shared.record(rec, None).0;
        send_error(w, &wire::plain_error(&ctx, status, &msg), None, keep)?;
        return Ok(keep);
    }

    let info = Info {
        api,
        model: &model,
        key: key.as_deref(),
        stream,
        tool_result: wire::ends_with_tool_result(api, body),
        raw: &raw,
    };
    let (seq, chosen) = shared.record(rec, Some(&info));
    ctx.seq = seq;
    let Some((index, step)) = chosen else {
        let msg = format!(
            "mock script exhausted: request #{seq} ({} {}, model {model}, stream {stream}) \
             matched no remaining step",
            api.name(),
            req.path
        );
        send_error(w, &wire::plain_error(&ctx, 500, &msg), None, keep)?;
        return Ok(keep);
    };
    if !shared.zero_latency && step.delay_ms > 0 && !shared.sleep(step.delay_ms) {
        return Ok(false);
    }
    let out = Out {
        shared,
        ctx: &ctx,
        step: index,
        keep,
        stream,
    };
    match &step.action {
        Action::Reply(r) => out.reply(w, &wire::fill(r, api, body, &model)),
        Action::Fault(f) => out.fault(w, f),
    }
}

fn send_error(w: &mut TcpStream, e: &ErrorResp, step: Option<usize>, keep: bool) -> io::Result<()> {
    let mut headers = e.headers.clone();
    if let Some(s) = step {
        headers.push(("x-mock-step".into(), s.to_string()));
    }
    let body = e.body.to_string();
    http::send(
        w,
        &http::full_response(e.status, &headers, body.as_bytes(), keep),
    )
}

/// How a stream ends.
enum Ending {
    /// Trailer and last chunk; the connection may stay open.
    Normal,
    /// No end: wait until the client leaves, the mock stops or the cap passes.
    Stall(Duration),
    /// These bytes (a partial event) in a chunk, then close without the last chunk.
    Truncate(Vec<u8>),
}

/// Writing one answer.
struct Out<'a> {
    shared: &'a Shared,
    ctx: &'a Ctx<'a>,
    step: usize,
    keep: bool,
    stream: bool,
}

impl Out<'_> {
    fn headers(&self, content_type: &str) -> Vec<(String, String)> {
        let mut h = vec![("content-type".to_string(), content_type.to_string())];
        if content_type.starts_with("text/event-stream") {
            h.push(("cache-control".into(), "no-cache".into()));
        }
        h.extend(wire::request_id_header(self.ctx));
        h.push(("x-mock-step".into(), self.step.to_string()));
        h
    }

    fn delay(&self, r: &Reply) -> u64 {
        if self.shared.zero_latency {
            0
        } else {
            r.event_delay_ms
        }
    }

    fn reply(&self, w: &mut TcpStream, r: &Reply) -> io::Result<bool> {
        if self.stream {
            let events = wire::reply_events(self.ctx, r);
            self.write_stream(w, &events, self.delay(r), Ending::Normal)
        } else {
            let body = wire::reply_json(self.ctx, r).to_string();
            let h = self.headers("application/json");
            http::send(w, &http::full_response(200, &h, body.as_bytes(), self.keep))?;
            Ok(self.keep)
        }
    }

    fn fault(&self, w: &mut TcpStream, f: &Fault) -> io::Result<bool> {
        if let Some(e) = wire::fault_error(self.ctx, f) {
            send_error(w, &e, Some(self.step), self.keep)?;
            return Ok(self.keep);
        }
        let ctx = self.ctx;
        match f {
            Fault::Http {
                status,
                body,
                content_type,
                headers,
            } => {
                let mut h = vec![(
                    "content-type".to_string(),
                    content_type
                        .clone()
                        .unwrap_or_else(|| "application/json".into()),
                )];
                h.extend(headers.iter().cloned());
                h.push(("x-mock-step".into(), self.step.to_string()));
                http::send(
                    w,
                    &http::full_response(*status, &h, body.as_bytes(), self.keep),
                )?;
                Ok(self.keep)
            }
            Fault::MalformedJson { after_events } => {
                if self.stream {
                    let mut events = wire::reply_events(ctx, &Reply::text("malformed stream"));
                    let i = (*after_events).min(events.len() - 1);
                    events[i] = wire::break_event(&events[i]);
                    self.write_stream(w, &events, 0, Ending::Normal)
                } else {
                    let body = wire::malformed_body(ctx);
                    let h = self.headers("application/json");
                    http::send(w, &http::full_response(200, &h, body.as_bytes(), self.keep))?;
                    Ok(self.keep)
                }
            }
            Fault::Stall {
                after_events,
                max_secs,
                reply,
            } => {
                let r = reply.clone().unwrap_or_else(wire::default_stream_reply);
                let cap = Duration::from_secs(max_secs.unwrap_or(30));
                if self.stream {
                    let events = wire::reply_events(ctx, &r);
                    let n = (*after_events).min(events.len());
                    self.write_stream(w, &events[..n], self.delay(&r), Ending::Stall(cap))
                } else {
                    self.partial_body(w, &r)?;
                    stall(self.shared, w, cap);
                    Ok(false)
                }
            }
            Fault::Truncated {
                after_events,
                reply,
            } => {
                let r = reply.clone().unwrap_or_else(wire::default_stream_reply);
                if self.stream {
                    let events = wire::reply_events(ctx, &r);
                    let n = (*after_events).min(events.len() - 1);
                    let next = ctx.framing().encode(n, &events[n]);
                    let half = next[..next.len() / 2].to_vec();
                    self.write_stream(w, &events[..n], self.delay(&r), Ending::Truncate(half))
                } else {
                    self.partial_body(w, &r)?;
                    Ok(false)
                }
            }
            Fault::MidStreamError {
                after_events,
                error,
                reply,
            } => {
                if !self.stream {
                    let f = match error {
                        super::script::StreamErrorKind::Overloaded => Fault::overloaded(),
                        super::script::StreamErrorKind::ServerError => Fault::ServerError,
                    };
                    let e = wire::fault_error(ctx, &f).expect("an HTTP fault");
                    send_error(w, &e, Some(self.step), self.keep)?;
                    return Ok(self.keep);
                }
                let r = reply.clone().unwrap_or_else(wire::default_stream_reply);
                let mut events = wire::reply_events(ctx, &r);
                events.truncate((*after_events).min(events.len()));
                events.push(wire::stream_error(ctx, *error));
                self.write_stream(w, &events, self.delay(&r), Ending::Normal)
            }
            Fault::ConnectionReset => {
                reset(w);
                Ok(false)
            }
            Fault::Hangup => {
                let _ = w.shutdown(Shutdown::Both);
                Ok(false)
            }
            _ => unreachable!("HTTP faults are rendered by wire::fault_error"),
        }
    }

    /// Headers announcing the whole JSON body of `r`, then half of it.
    fn partial_body(&self, w: &mut TcpStream, r: &Reply) -> io::Result<()> {
        let body = wire::reply_json(self.ctx, r).to_string();
        let h = self.headers("application/json");
        let mut out = http::head(200, &h, Some(body.len()), self.keep);
        out.extend_from_slice(&body.as_bytes()[..body.len() / 2]);
        http::send(w, &out)
    }

    fn write_stream(
        &self,
        w: &mut TcpStream,
        events: &[Event],
        delay_ms: u64,
        ending: Ending,
    ) -> io::Result<bool> {
        let framing = self.ctx.framing();
        let keep = self.keep && matches!(ending, Ending::Normal);
        let h = self.headers(framing.content_type());
        let mut buf = http::head(200, &h, None, keep);
        let batch = self.shared.zero_latency || delay_ms == 0;
        for (i, ev) in events.iter().enumerate() {
            if i > 0 && delay_ms > 0 && !self.shared.sleep(delay_ms) {
                return Ok(false);
            }
            buf.extend_from_slice(&http::chunk(&framing.encode(i, ev)));
            if !batch {
                http::send(w, &buf)?;
                buf.clear();
            }
        }
        match ending {
            Ending::Normal => {
                let t = framing.trailer(events.len());
                if !t.is_empty() {
                    buf.extend_from_slice(&http::chunk(t));
                }
                buf.extend_from_slice(http::LAST_CHUNK);
                http::send(w, &buf)?;
                Ok(keep)
            }
            Ending::Stall(cap) => {
                http::send(w, &buf)?;
                stall(self.shared, w, cap);
                Ok(false)
            }
            Ending::Truncate(partial) => {
                if delay_ms > 0 && !self.shared.sleep(delay_ms) {
                    return Ok(false);
                }
                buf.extend_from_slice(&http::chunk(&partial));
                http::send(w, &buf)?;
                let _ = w.shutdown(Shutdown::Write);
                Ok(false)
            }
        }
    }
}

/// Waits until the client closes the connection, the mock stops, or `cap` passes.
fn stall(shared: &Shared, w: &TcpStream, cap: Duration) {
    let end = Instant::now() + cap;
    let _ = w.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 1024];
    let mut r = w;
    while Instant::now() < end && !shared.stopping() {
        match r.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Makes the close of `s` send RST instead of FIN (`SO_LINGER` of zero).
fn reset(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `s` owns a valid socket fd for this call; the option value points to a live
    // `linger` of the size passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    // The socket has other fds (the reader, the registry): the RST goes out when the last
    // of them closes, right after the connection thread returns.
}
