//! `config.toml`, environment overrides and logging, through the CLI.

use bulkhead_tests::{text, TestEnv};

fn write_config(env: &TestEnv, body: &str) {
    std::fs::create_dir_all(env.state()).unwrap();
    std::fs::write(env.state().join("config.toml"), body).unwrap();
}

#[test]
fn bad_config_names_the_key_and_the_file() {
    let env = TestEnv::new();
    write_config(&env, "[log]\nlevle = \"debug\"\n");
    let out = env.bulkhead(&["workspace", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("config.toml") && err.contains("levle"),
        "{err}"
    );

    write_config(&env, "[limits]\nmemory = \"a lot\"\n");
    let err = text(&env.bulkhead(&["workspace", "list"]).stderr);
    assert!(err.contains("limits.memory"), "{err}");

    write_config(&env, "");
    let out = env
        .cmd()
        .env("BULKHEAD_LOG_FORMAT", "xml")
        .args(["workspace", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("BULKHEAD_LOG_FORMAT"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn config_limits_are_defaults_for_workspaces() {
    let env = TestEnv::new();
    write_config(&env, "[limits]\nmemory = \"300M\"\npids = 77\n");
    env.create("a");
    let out = env.bulkhead(&["--json", "workspace", "show", "a"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["limits"]["memory_bytes"], 300u64 << 20);
    assert_eq!(v["limits"]["pids"], 77);
    // A workspace's own setting wins over the platform default.
    let out = env.bulkhead(&["--json", "workspace", "create", "b", "--pids", "99"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["limits"]["pids"], 99);
    assert_eq!(v["limits"]["memory_bytes"], 300u64 << 20);
}

#[test]
fn json_logs_to_a_rotated_file_with_fields() {
    let env = TestEnv::new();
    let log = env.dir.path().join("bulkhead.log");
    write_config(
        &env,
        &format!(
            "[log]\nfile = {:?}\nmax_bytes = 4096\nkeep = 2\n",
            log.display().to_string()
        ),
    );
    for i in 0..40 {
        let out = env
            .cmd()
            .env("BULKHEAD_LOG_FORMAT", "json")
            .env("BULKHEAD_LOG_LEVEL", "info")
            .args(["workspace", "create", &format!("w{i}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        // Logs go to the file, not to the terminal.
        assert_eq!(text(&out.stderr), "");
    }
    let current = std::fs::read_to_string(&log).unwrap();
    let first: serde_json::Value = serde_json::from_str(current.lines().next().unwrap()).unwrap();
    assert_eq!(first["subsystem"], "workspace");
    assert_eq!(first["level"], "info");
    assert!(first["workspace"].as_str().unwrap().starts_with('w'));
    assert_eq!(first["msg"], "created workspace");
    assert!(first["ts"].as_str().unwrap().contains('T'));
    assert!(
        env.dir.path().join("bulkhead.log.1").exists(),
        "no rotation happened"
    );
    assert!(
        !env.dir.path().join("bulkhead.log.3").exists(),
        "more rotated files than keep = 2"
    );
    assert!(std::fs::metadata(&log).unwrap().len() <= 4096);
}

#[test]
fn text_logs_to_stderr_by_level() {
    let env = TestEnv::new();
    let out = env
        .cmd()
        .env("BULKHEAD_LOG_LEVEL", "info")
        .args(["workspace", "create", "t"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(
        err.contains("INFO  workspace: created workspace workspace=t"),
        "{err}"
    );
    let out = env
        .cmd()
        .args(["workspace", "delete", "t"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stderr), "", "default level is warn");
}

#[test]
fn io_limits_come_from_config_and_flags_and_bad_ones_are_refused() {
    let env = TestEnv::new();
    write_config(
        &env,
        "[limits]\nio_weight = 300\nio_max = \"wbps=10M, riops=100\"\n",
    );
    env.create("a");
    let out = env.bulkhead(&["--json", "workspace", "show", "a"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["limits"]["io_weight"], 300);
    assert_eq!(v["limits"]["io_max"], "wbps=10485760,riops=100");
    // The workspace's own flags win; `none` clears the ceilings.
    let out = env.bulkhead(&[
        "--json",
        "workspace",
        "create",
        "b",
        "--io-max",
        "none",
        "--io-weight",
        "50",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["limits"]["io_max"], "none");
    assert_eq!(v["limits"]["io_weight"], 50);
    let out = env.bulkhead(&["workspace", "show", "b"]);
    assert!(
        text(&out.stdout).contains("io:      weight 50, max none"),
        "{}",
        text(&out.stdout)
    );
    // Bad values: what is wrong and what to write instead.
    for (flags, expect) in [
        (&["--io-max", "wbps=1"][..], "limits.io_max.wbps"),
        (&["--io-max", "fast"][..], "key=value"),
        (&["--io-max", "rbps=1M,rbps=2M"][..], "given twice"),
        (&["--io-max", "iops=5"][..], "use rbps, wbps"),
        (&["--io-weight", "0"][..], "limits.io_weight"),
    ] {
        let mut args = vec!["workspace", "create", "c"];
        args.extend_from_slice(flags);
        let out = env.bulkhead(&args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        let err = text(&out.stderr);
        assert!(err.contains(expect), "{flags:?}: {err}");
    }
    write_config(&env, "[limits]\nio_max = \"wbps=lots\"\n");
    let out = env.bulkhead(&["workspace", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("limits.io_max"), "{err}");
}
