//! `bulkhead serve`: the JSON-RPC server on stdio, and `--describe`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{describe, serve, Output, ServeOptions};
use crate::error::{exit, Error, Result};
use crate::platform::Platform;

/// Arguments of `bulkhead serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Serve JSON-RPC 2.0 on stdin/stdout, one JSON object per line (logs go to stderr).
    #[arg(long, required_unless_present = "describe")]
    pub stdio: bool,
    /// Print the methods as an OpenRPC 1.2.6 document and exit.
    #[arg(long, conflicts_with = "stdio")]
    pub describe: bool,
    /// Seconds in-flight requests may go on after end of input before they are cancelled.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub shutdown_grace: f64,
}

/// Runs `bulkhead serve` on `platform`; `key_file` is the global `--credential-key-file`.
pub fn run(args: &ServeArgs, platform: Platform, key_file: Option<PathBuf>) -> Result<i32> {
    if args.describe {
        let doc = serde_json::to_string_pretty(&describe()).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{doc}");
        return Ok(exit::OK);
    }
    if !(args.shutdown_grace.is_finite() && args.shutdown_grace >= 0.0) {
        return Err(Error::Invalid(
            "--shutdown-grace must be a number of seconds, 0 or more".into(),
        ));
    }
    let options = ServeOptions {
        credential_key_file: key_file,
        grace: Duration::from_secs_f64(args.shutdown_grace.min(3600.0)),
    };
    log::info!(target: "rpc", "serving JSON-RPC on stdio");
    let stdin = std::io::stdin().lock();
    serve(platform, options, stdin, Output::new(std::io::stdout()))
        .map_err(|e| Error::io("standard input", e))?;
    Ok(exit::OK)
}
