//! Golden bytes: one fixed sample of every message variant and its exact encoding. A change
//! to any layout breaks this test, which is the point: bump `PROTOCOL_VERSION` and update the
//! bytes together, knowingly.

use crate::frame::{decode_payload, encode_frame};
use crate::msg::*;

fn limits() -> Limits {
    Limits {
        memory_bytes: 512 << 20,
        swap_bytes: 0,
        pids: 256,
        cpu_weight: 100,
        cpu_quota_us: 50_000,
        cpu_period_us: 100_000,
        tmp_bytes: 256 << 20,
        shm_bytes: 64 << 20,
        nofile: 4096,
        disk_bytes: 64 << 20,
        inodes: 16384,
        io_weight: 100,
        io_max: IoMax {
            rbps: 0,
            wbps: 1 << 20,
            riops: 0,
            wiops: 100,
        },
    }
}

fn stat() -> FileStat {
    FileStat {
        kind: FileKind::File,
        size: 5,
        mode: 0o644,
        mtime: 1_700_000_000,
    }
}

/// Every variant of every enum that crosses the wire, with a fixed value.
pub(crate) fn samples() -> Vec<(&'static str, Vec<u8>)> {
    fn enc<T: bincode::Encode>(m: &T) -> Vec<u8> {
        encode_frame(m).expect("encode")
    }
    let exec = ExecRequest {
        command: Command::Argv(vec!["ls".into(), "-l".into()]),
        cwd: "/workspace".into(),
        env: vec![("K".into(), "V".into())],
        stdin: b"in".to_vec(),
        timeout_ms: 1000,
        output_cap: 65536,
        kill_stragglers: true,
    };
    let spec = LaunchSpec {
        workspace_id: "acme".into(),
        workspace_dir: "/s/w/acme/files".into(),
        workspace_writable: true,
        host_uid: 1000,
        host_gid: 1000,
        hostname: "acme".into(),
        limits: limits(),
        binds: vec![Bind {
            host: "/s/w/acme/run/skill-1".into(),
            path: "/mnt/skill".into(),
        }],
    };
    let att = Attestation {
        pid: 1,
        uid: 1000,
        gid: 1000,
        no_new_privs: true,
        seccomp_mode: 2,
        seccomp_filters: 1,
        cap_inh: 0,
        cap_prm: 0,
        cap_eff: 0,
        cap_bnd: 0,
        cap_amb: 0,
        landlock_abi: 6,
        landlock_enforced: true,
        ns: NsIds {
            user: 1,
            mnt: 2,
            pid: 3,
            net: 4,
            ipc: 5,
            uts: 6,
            cgroup: 7,
        },
        uid_map: "1000 1000 1".into(),
        gid_map: "1000 1000 1".into(),
        interfaces: vec!["lo".into()],
        root_readonly: true,
        egress_proxy: true,
        rlimits: vec![RlimitSeen {
            name: "Max realtime priority".into(),
            soft: 0,
            hard: 0,
        }],
        mounts: vec![MountSeen {
            path: "/usr".into(),
            fstype: "ext4".into(),
            readonly: true,
        }],
        workspace_fs: WorkspaceFs {
            fs_type: 0xef53,
            size_bytes: 60 << 20,
            inodes: 16384,
        },
    };
    let req = |body: Request| enc(&ControllerMsg::Request { id: 7, body });
    let resp = |result: Result<Reply, ToolError>| enc(&WorkerMsg::Response { id: 7, result });
    vec![
        (
            "Launch",
            enc(&ControllerMsg::Launch(
                spec.clone(),
                LaunchOptions { egress: false },
            )),
        ),
        (
            "Launch/Egress",
            enc(&ControllerMsg::Launch(spec, LaunchOptions { egress: true })),
        ),
        ("Request/Exec/Argv", req(Request::Exec(exec.clone()))),
        (
            "Request/Exec/Shell",
            req(Request::Exec(ExecRequest {
                command: Command::Shell("echo hi".into()),
                ..exec
            })),
        ),
        (
            "Request/Read",
            req(Request::Read {
                path: "a".into(),
                offset: 1,
                limit: 2,
            }),
        ),
        (
            "Request/Write",
            req(Request::Write {
                path: "a".into(),
                data: b"x".to_vec(),
                mode: 0o600,
                create_parents: true,
            }),
        ),
        (
            "Request/Edit",
            req(Request::Edit {
                path: "a".into(),
                old: "o".into(),
                new: "n".into(),
                replace_all: false,
            }),
        ),
        ("Request/Ls", req(Request::Ls { path: "/".into() })),
        ("Request/Stat", req(Request::Stat { path: "/".into() })),
        ("Request/Ping", req(Request::Ping)),
        ("Cancel", enc(&ControllerMsg::Cancel { id: 7 })),
        ("Shutdown", enc(&ControllerMsg::Shutdown)),
        (
            "SetupFailed",
            enc(&WorkerMsg::SetupFailed(SetupError {
                step: SetupStep::Mounts,
                errno: 2,
                path: "/x".into(),
                detail: "d".into(),
                reason: SetupReason::Other,
            })),
        ),
        (
            "SetupFailed/ForeignHostId",
            enc(&WorkerMsg::SetupFailed(SetupError {
                step: SetupStep::Spec,
                errno: 0,
                path: "/r/7".into(),
                detail: "d".into(),
                reason: SetupReason::ForeignHostId { id: 7, owner: 1000 },
            })),
        ),
        (
            "Hello",
            enc(&WorkerMsg::Hello {
                version: 1,
                attestation: att,
            }),
        ),
        (
            "Output",
            enc(&WorkerMsg::Output {
                id: 7,
                stream: Stream::Stderr,
                data: b"out".to_vec(),
            }),
        ),
        (
            "Response/Exec",
            resp(Ok(Reply::Exec(ExecResult {
                exit: ExitKind::Signal(9),
                timed_out: true,
                cancelled: false,
                truncated: true,
                stdout_bytes: 10,
                stderr_bytes: 20,
                duration_us: 30,
            }))),
        ),
        (
            "Response/Read",
            resp(Ok(Reply::Read(ReadResult {
                data: b"abc".to_vec(),
                size: 3,
                eof: true,
            }))),
        ),
        ("Response/Write", resp(Ok(Reply::Write { bytes: 3 }))),
        ("Response/Edit", resp(Ok(Reply::Edit { replacements: 2 }))),
        (
            "Response/Ls",
            resp(Ok(Reply::Ls {
                entries: vec![DirEntry {
                    name: "f".into(),
                    stat: stat(),
                }],
                truncated: false,
            })),
        ),
        (
            "Response/Stat",
            resp(Ok(Reply::Stat(FileStat {
                kind: FileKind::Symlink,
                ..stat()
            }))),
        ),
        ("Response/Pong", resp(Ok(Reply::Pong))),
        (
            "Response/Err",
            resp(Err(ToolError {
                kind: ToolErrorKind::NotUnique,
                message: "m".into(),
            })),
        ),
        (
            "Report/Ready",
            enc(&LauncherReport::Ready {
                worker_pid: 42,
                cgroup_version: CgroupVersion::V1,
                cgroup_dirs: vec!["/c".into()],
                oom_file: "/c/o".into(),
                privileged: true,
            }),
        ),
        (
            "Report/Exited",
            enc(&LauncherReport::Exited {
                code: 0,
                signal: 9,
                oom_kills: 1,
                cgroup_removed: true,
            }),
        ),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The expected encodings (frame header included).
const GOLDEN: &[(&str, &str)] = &[
    ("Launch", "75000000000461636d650f2f732f772f61636d652f66696c657301fbe803fbe8030461636d65fc0000002000fb000164fb50c3fca0860100fc00000010fc00000004fb0010fc00000004fb00406400fc00001000006401152f732f772f61636d652f72756e2f736b696c6c2d310a2f6d6e742f736b696c6c00"),
    ("Launch/Egress", "75000000000461636d650f2f732f772f61636d652f66696c657301fbe803fbe8030461636d65fc0000002000fb000164fb50c3fca0860100fc00000010fc00000004fb0010fc00000004fb00406400fc00001000006401152f732f772f61636d652f72756e2f736b696c6c2d310a2f6d6e742f736b696c6c01"),
    ("Request/Exec/Argv", "270000000107000002026c73022d6c0a2f776f726b737061636501014b015602696efbe803fc0000010001"),
    ("Request/Exec/Shell", "2800000001070001076563686f2068690a2f776f726b737061636501014b015602696efbe803fc0000010001"),
    ("Request/Read", "0700000001070101610102"),
    ("Request/Write", "0b00000001070201610178fb800101"),
    ("Request/Edit", "0a0000000107030161016f016e00"),
    ("Request/Ls", "05000000010704012f"),
    ("Request/Stat", "05000000010705012f"),
    ("Request/Ping", "03000000010706"),
    ("Cancel", "020000000207"),
    ("Shutdown", "0100000003"),
    ("SetupFailed", "09000000000504022f78016400"),
    ("SetupFailed/ForeignHostId", "0f000000000100042f722f3701640107fbe803"),
    ("Hello", "68000000010101fbe803fbe80301020100000000000c01010203040506070b31303030203130303020310b313030302031303030203101026c6f010101154d6178207265616c74696d65207072696f72697479000001042f757372046578743401fb53effc0000c003fb0040"),
    ("Output", "07000000020701036f7574"),
    ("Response/Exec", "0c0000000307000001120100010a141e"),
    ("Response/Read", "0a00000003070001036162630301"),
    ("Response/Write", "050000000307000203"),
    ("Response/Edit", "050000000307000302"),
    ("Response/Ls", "12000000030700040101660005fba401fc00e2a7ca00"),
    ("Response/Stat", "0e000000030700050205fba401fc00e2a7ca"),
    ("Response/Pong", "0400000003070006"),
    ("Response/Err", "0600000003070104016d"),
    ("Report/Ready", "0d000000002a0101022f63042f632f6f01"),
    ("Report/Exited", "050000000100120101"),
];

#[test]
fn every_variant_encodes_to_its_golden_bytes() {
    let got = samples();
    let rendered: Vec<String> = got
        .iter()
        .map(|(n, b)| format!("    ({n:?}, {:?}),", hex(b)))
        .collect();
    assert_eq!(
        got.len(),
        GOLDEN.len(),
        "golden table out of date; current encodings:\n{}",
        rendered.join("\n")
    );
    for ((name, bytes), (gname, ghex)) in got.iter().zip(GOLDEN) {
        assert_eq!(name, gname);
        assert_eq!(
            &hex(bytes),
            ghex,
            "layout of {name} changed: bump PROTOCOL_VERSION and update the golden bytes"
        );
    }
}

#[test]
fn every_sample_round_trips() {
    // Decoding the golden bytes gives back the same bytes when re-encoded.
    for (name, bytes) in samples() {
        let payload = &bytes[4..];
        let again = match name {
            n if n.starts_with("Report/") => {
                encode_frame(&decode_payload::<LauncherReport>(payload).unwrap())
            }
            "Launch" | "Launch/Egress" | "Cancel" | "Shutdown" => {
                encode_frame(&decode_payload::<ControllerMsg>(payload).unwrap())
            }
            n if n.starts_with("Request/") => {
                encode_frame(&decode_payload::<ControllerMsg>(payload).unwrap())
            }
            _ => encode_frame(&decode_payload::<WorkerMsg>(payload).unwrap()),
        }
        .unwrap();
        assert_eq!(again, bytes, "{name}");
    }
}
