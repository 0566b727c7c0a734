//! `bulkhead-mock-llm --script FILE.json [--port N] [--zero-latency] [--quiet]`: the offline
//! mock model server (Anthropic, OpenAI and Gemini wire formats) on 127.0.0.1, replaying a
//! scripted conversation. Prints `listening on http://127.0.0.1:PORT` on stdout, then
//! serves until killed; each request is logged on stderr unless `--quiet`.
//!
//! The script format is documented on `bulkhead_tests::mock_llm::Script`; see
//! `tests/demo-script.json` for an example.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use bulkhead_tests::mock_llm::{MockLlm, MockOptions, Script};

const USAGE: &str =
    "usage: bulkhead-mock-llm --script FILE.json [--port N] [--zero-latency] [--quiet]

Serves the Anthropic (POST /v1/messages), OpenAI (POST /v1/chat/completions) and Gemini
(POST /v1beta/models/MODEL:generateContent | :streamGenerateContent) APIs on 127.0.0.1,
answering each request with the next step of the script.";

fn main() -> ExitCode {
    let mut script: Option<PathBuf> = None;
    let mut opts = MockOptions {
        verbose: true,
        ..MockOptions::default()
    };
    let mut zero = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(name.to_string())
        };
        match flag.as_str() {
            "--script" => match value("--script") {
                Ok(v) => script = Some(v.into()),
                Err(n) => return usage_error(&format!("{n} needs a value")),
            },
            "--port" => match value("--port").map(|v| v.parse::<u16>()) {
                Ok(Ok(p)) => opts.port = p,
                _ => return usage_error("--port needs a port number"),
            },
            "--zero-latency" => zero = true,
            "--quiet" => opts.verbose = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let Some(path) = script else {
        return usage_error("--script is required");
    };
    let mut script = match Script::from_file(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bulkhead-mock-llm: {e}");
            return ExitCode::from(2);
        }
    };
    script.zero_latency |= zero;
    let steps = script.steps.len();
    let mock = match MockLlm::start_with(script, opts) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("bulkhead-mock-llm: cannot listen on 127.0.0.1: {e}");
            return ExitCode::from(1);
        }
    };
    println!("listening on {}", mock.base_url());
    let _ = std::io::stdout().flush();
    eprintln!("bulkhead-mock-llm: {} steps from {}", steps, path.display());
    mock.serve_forever();
    ExitCode::SUCCESS
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("bulkhead-mock-llm: {msg}\n{USAGE}");
    ExitCode::from(2)
}
