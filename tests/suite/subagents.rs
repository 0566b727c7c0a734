//! Subagents end to end with the offline mock model on 127.0.0.1, through the library: the
//! model calls `spawn_subagents`, the children run in new sessions of the same workspace,
//! their answers come back in input order and their usage is added to the parent's; the
//! depth limit and the children cap hold through the tool and the API; a per-task timeout
//! cancels a child whose model never answers. No sandbox is needed (no sandbox tool runs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead::agent::subagents::{running_subagents, SubTask, SubagentOptions};
use bulkhead::{RunEvent, RunOutcome, RunRequest, Workspace};
use bulkhead_tests::mock_llm::{MockLlm, Reply, Script, Step};
use bulkhead_tests::TestEnv;
use serde_json::{json, Value};

const PARENT: &str = "PARENT-TASK-7f3e";

fn workspace(env: &TestEnv, id: &str) -> Workspace {
    env.create(id);
    let p = bulkhead::Platform::open(bulkhead::PlatformConfig {
        state_dir: env.state(),
        launcher: Some(bulkhead_tests::bin("bulkhead-launch")),
    })
    .unwrap();
    p.workspace(id).unwrap()
}

fn request(mock: &MockLlm, message: &str) -> RunRequest {
    let mut req = RunRequest::new(message);
    req.model = Some("anthropic/claude-sonnet-4-5".into());
    req.fallbacks = Some(vec![]);
    req.base_url = Some(mock.base_url());
    req.stream = false;
    req.env = Some(std::collections::BTreeMap::from([(
        "ANTHROPIC_API_KEY".to_string(),
        "mock-key".to_string(),
    )]));
    req
}

/// A parent step: answers requests of the parent run (its message is in every request).
fn parent(reply: Reply, after_tool: bool) -> Step {
    Step::reply(reply)
        .containing(PARENT)
        .after_tool_result(after_tool)
}

/// A child step: answers the first request of the child whose task contains `marker`.
fn child(marker: &str, reply: Reply) -> Step {
    Step::reply(reply)
        .containing(marker)
        .after_tool_result(false)
}

fn run(ws: &Workspace, req: RunRequest) -> (bulkhead::Result<bulkhead::RunResult>, Vec<RunEvent>) {
    let mut events = Vec::new();
    let r = ws.run_with_events(req, &mut |e| events.push(e.clone()));
    (r, events)
}

fn tool_names(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn transcript_exists(env: &TestEnv, ws: &str, sid: &str) -> bool {
    env.state()
        .join("workspaces")
        .join(ws)
        .join("sessions")
        .join(format!("{sid}.jsonl"))
        .is_file()
}

#[test]
fn the_tool_runs_two_children_in_order_and_sums_their_usage() {
    let env = TestEnv::new();
    let ws = workspace(&env, "fan");
    let mock = MockLlm::start(
        Script::new()
            .step(parent(
                Reply::tool_call(
                    "spawn_subagents",
                    json!({"tasks": [
                        {"task": "CHILD-ALPHA: count the apples", "label": "alpha", "role": "ROLE-APPLES"},
                        {"task": "CHILD-BETA: count the pears", "label": "beta"}
                    ]}),
                )
                .usage(100, 10),
                false,
            ))
            .step(parent(Reply::echo_tool_result("Summary: ").usage(50, 5), true))
            // alpha answers late, so beta ends first: the order of the results must still
            // be the order of the tasks.
            .step(child("CHILD-ALPHA", Reply::text("ALPHA-ANSWER 3 apples").usage(7, 3)).delay_ms(400))
            .step(child("CHILD-BETA", Reply::text("BETA-ANSWER 4 pears").usage(5, 2))),
    );
    let (r, events) = run(&ws, request(&mock, PARENT));
    let r = r.expect("parent run");

    // Both children ran, in sessions of their own that exist in the workspace.
    let starts: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::SubagentStart {
                label,
                session,
                depth,
                ..
            } => {
                assert_eq!(*depth, 1);
                Some((label.clone(), session.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2, "{events:#?}");
    let ends: Vec<&RunEvent> = events
        .iter()
        .filter(|e| matches!(e, RunEvent::SubagentEnd { .. }))
        .collect();
    assert_eq!(ends.len(), 2);
    for e in &ends {
        let RunEvent::SubagentEnd { ok, outcome, .. } = e else {
            unreachable!()
        };
        assert!(*ok);
        assert_eq!(*outcome, RunOutcome::Completed);
    }
    // beta ended first.
    assert!(matches!(ends[0], RunEvent::SubagentEnd { label, .. } if label == "beta"));
    for (_, sid) in &starts {
        assert_ne!(sid, &r.session);
        assert!(
            transcript_exists(&env, "fan", sid),
            "no transcript for {sid}"
        );
    }
    // The event JSON has the documented type tags.
    let line = ends[0].to_json_line();
    assert!(line.contains("\"type\":\"subagent_end\""), "{line}");

    // The tool result lists the answers in input order; the parent quoted it.
    let alpha = r.response.find("ALPHA-ANSWER").expect(&r.response);
    let beta = r.response.find("BETA-ANSWER").expect(&r.response);
    assert!(alpha < beta, "{}", r.response);
    assert!(
        r.response
            .contains("2 subagent(s) finished: 2 ok, 0 failed"),
        "{}",
        r.response
    );

    // The children's usage is in the parent's.
    assert_eq!(r.usage.input_tokens, 100 + 50 + 7 + 5, "{:?}", r.usage);
    assert_eq!(r.usage.output_tokens, 10 + 5 + 3 + 2, "{:?}", r.usage);

    // The role became a system-prompt line of alpha's run only; children have the tool
    // (depth 1 < default max depth 2).
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 4, "{reqs:#?}");
    let alpha_req = reqs
        .iter()
        .find(|q| q.body_text.contains("CHILD-ALPHA") && !q.body_text.contains(PARENT))
        .expect("alpha's request");
    assert!(alpha_req.body_text.contains("Your role: ROLE-APPLES"));
    assert!(tool_names(&alpha_req.body).contains(&"spawn_subagents".to_string()));
    let beta_req = reqs
        .iter()
        .find(|q| q.body_text.contains("CHILD-BETA") && !q.body_text.contains(PARENT))
        .expect("beta's request");
    assert!(!beta_req.body_text.contains("ROLE-APPLES"));
    // Nothing is left in the registry.
    assert!(running_subagents()
        .iter()
        .all(|c| !starts.iter().any(|(_, s)| s == &c.session)));
}

#[test]
fn at_max_depth_the_tool_is_absent_and_the_api_refuses() {
    let env = TestEnv::new();
    let ws = workspace(&env, "deep");
    let mock = MockLlm::start(
        Script::new()
            .step(parent(
                Reply::tool_call(
                    "spawn_subagents",
                    json!({"tasks": [{"task": "CHILD-DEEP: do it", "label": "deep"}]}),
                ),
                false,
            ))
            .step(parent(Reply::echo_tool_result("Parent saw: "), true))
            // The child tries to spawn anyway.
            .step(child(
                "CHILD-DEEP",
                Reply::tool_call(
                    "spawn_subagents",
                    json!({"tasks": [{"task": "GRANDCHILD-TASK", "label": "g"}]}),
                ),
            ))
            .step(
                Step::reply(Reply::echo_tool_result("Child saw: "))
                    .containing("CHILD-DEEP")
                    .after_tool_result(true),
            ),
    );
    let mut req = request(&mock, PARENT);
    req.subagents.max_depth = 1;
    let (r, events) = run(&ws, req);
    let r = r.expect("parent run");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 4, "{reqs:#?}");
    // The parent (depth 0) has the tool, the child (depth 1 = max) has not.
    assert!(tool_names(&reqs[0].body).contains(&"spawn_subagents".to_string()));
    let child_reqs: Vec<_> = reqs
        .iter()
        .filter(|q| q.body_text.contains("CHILD-DEEP") && !q.body_text.contains(PARENT))
        .collect();
    assert_eq!(child_reqs.len(), 2, "{reqs:#?}");
    for q in &child_reqs {
        let names = tool_names(&q.body);
        assert!(!names.is_empty());
        assert!(!names.contains(&"spawn_subagents".to_string()), "{names:?}");
    }
    // Its call was an unknown tool; no grandchild ran.
    assert!(
        child_reqs[1]
            .tool_results()
            .iter()
            .any(|t| t.contains("unknown tool `spawn_subagents`")),
        "{:?}",
        child_reqs[1].tool_results()
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, RunEvent::SubagentStart { .. }))
            .count(),
        1
    );
    assert!(r.response.contains("Child saw:"), "{}", r.response);

    // The API refuses from a run at the limit, before starting anything.
    let mut at_limit = request(&mock, "x");
    at_limit.depth = 1;
    let opts = SubagentOptions {
        max_depth: 1,
        ..Default::default()
    };
    let before = mock.requests().len();
    let e = ws
        .run_subagents(&at_limit, vec![SubTask::new("GRANDCHILD-TASK")], &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("depth limit"), "{e}");
    assert_eq!(mock.requests().len(), before);
}

#[test]
fn fan_out_over_the_cap_is_refused_across_calls() {
    let env = TestEnv::new();
    let ws = workspace(&env, "cap");
    let spawn = |tasks: &[&str]| {
        Reply::tool_call(
            "spawn_subagents",
            json!({"tasks": tasks.iter().map(|t| json!({"task": t})).collect::<Vec<_>>()}),
        )
    };
    let mock = MockLlm::start(
        Script::new()
            .step(parent(spawn(&["CHILD-F1", "CHILD-F2", "CHILD-F3"]), false))
            .step(parent(spawn(&["CHILD-F1", "CHILD-F2"]), true))
            .step(parent(spawn(&["CHILD-F3"]), true))
            .step(parent(Reply::text("all done"), true))
            .step(
                Step::reply(Reply::text("F done"))
                    .containing("CHILD-F")
                    .after_tool_result(false)
                    .forever(),
            ),
    );
    let mut req = request(&mock, PARENT);
    req.subagents.max_children = 2;
    let (r, events) = run(&ws, req);
    let r = r.expect("parent run");
    assert_eq!(r.response, "all done");
    let last = mock
        .requests()
        .into_iter()
        .rfind(|q| q.body_text.contains(PARENT))
        .unwrap();
    let results = last.tool_results();
    assert_eq!(results.len(), 3, "{results:#?}");
    assert!(
        results[0].contains("too many subagents: 3 asked, but only 2 more may start"),
        "{}",
        results[0]
    );
    assert!(
        results[1].contains("2 subagent(s) finished: 2 ok"),
        "{}",
        results[1]
    );
    assert!(
        results[2].contains("too many subagents: 1 asked, but only 0 more may start"),
        "{}",
        results[2]
    );
    // The refused calls are errors the model sees; only two children ever ran.
    let errors: Vec<bool> = r.tool_calls.iter().map(|c| c.is_error).collect();
    assert_eq!(errors, vec![true, false, true]);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, RunEvent::SubagentStart { .. }))
            .count(),
        2
    );

    // The API refuses a batch over the cap as a whole.
    let opts = SubagentOptions {
        max_children: 1,
        ..Default::default()
    };
    let e = ws
        .run_subagents(
            &request(&mock, "x"),
            vec![SubTask::new("CHILD-F4"), SubTask::new("CHILD-F5")],
            &opts,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("too many subagents"), "{e}");
}

#[test]
fn a_per_task_timeout_cancels_a_child_that_would_wait() {
    let env = TestEnv::new();
    let ws = workspace(&env, "slow");
    let mock = MockLlm::start(
        Script::new()
            .step(child("CHILD-SLOW", Reply::text("too late")).delay_ms(60_000))
            .step(child("CHILD-FAST", Reply::text("FAST-ANSWER").usage(3, 1))),
    );
    let opts = SubagentOptions {
        task_timeout: Some(Duration::from_secs(1)),
        concurrency: 2,
        ..Default::default()
    };
    let seen_running = Arc::new(std::sync::Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let mut events = Vec::new();
    let results = ws
        .run_subagents_with_events(
            &request(&mock, "x"),
            vec![
                SubTask::new("CHILD-SLOW: wait").label("slow"),
                SubTask::new("CHILD-FAST: go").label("fast"),
            ],
            &opts,
            &mut |e| {
                if let RunEvent::SubagentStart { label, session, .. } = e {
                    if label == "slow" {
                        let listed = running_subagents().into_iter().any(|c| {
                            &c.session == session && c.workspace == "slow" && c.depth == 1
                        });
                        seen_running.lock().unwrap().push(listed);
                    }
                }
                events.push(e.clone());
            },
        )
        .expect("batch");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "the timeout did not cancel: {took:?}"
    );
    assert_eq!(*seen_running.lock().unwrap(), vec![true]);

    assert_eq!(results.len(), 2);
    assert_eq!(results[0].label, "slow");
    assert_eq!(results[0].outcome, RunOutcome::TimedOut, "{:?}", results[0]);
    assert!(!results[0].is_ok());
    assert!(results[0].error.is_some());
    assert_eq!(results[1].label, "fast");
    assert_eq!(results[1].response.as_deref(), Some("FAST-ANSWER"));
    assert_eq!(results[1].usage.input_tokens, 3);
    assert!(running_subagents()
        .iter()
        .all(|c| c.session != results[0].session && c.session != results[1].session));
    let end = events
        .iter()
        .find(|e| matches!(e, RunEvent::SubagentEnd { label, .. } if label == "slow"))
        .unwrap();
    assert!(matches!(end, RunEvent::SubagentEnd { ok: false, .. }));
    // The child's own transcript records the timeout.
    let t = std::fs::read_to_string(
        env.state()
            .join("workspaces/slow/sessions")
            .join(format!("{}.jsonl", results[0].session)),
    )
    .unwrap();
    assert!(t.contains("timed_out"), "{t}");
}

#[test]
fn cancelling_the_parent_cancels_its_children() {
    let env = TestEnv::new();
    let ws = workspace(&env, "cancel");
    let mock = MockLlm::start(
        Script::new().step(child("CHILD-WAIT", Reply::text("too late")).delay_ms(60_000)),
    );
    let mut parent = request(&mock, "x");
    let token = bulkhead::CancelToken::new();
    parent.cancel = Some(token.clone());
    let opts = SubagentOptions {
        task_timeout: None,
        ..Default::default()
    };
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        token.cancel();
    });
    let t0 = Instant::now();
    let results = ws
        .run_subagents(&parent, vec![SubTask::new("CHILD-WAIT: wait")], &opts)
        .expect("batch");
    canceller.join().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "not cancelled: {:?}",
        t0.elapsed()
    );
    assert_eq!(
        results[0].outcome,
        RunOutcome::Cancelled,
        "{:?}",
        results[0]
    );
    assert!(results[0].error.as_deref().unwrap().contains("cancelled"));
}

#[test]
fn children_work_in_the_same_workspace_files_in_sandboxes_of_their_own() {
    if !bulkhead_tests::sandbox_or_skip("children_work_in_the_same_workspace_files") {
        return;
    }
    let env = TestEnv::new();
    let ws = workspace(&env, "files");
    let writer = |marker: &str, file: &str| {
        [
            child(
                marker,
                Reply::tool_call(
                    "bash",
                    json!({"command": format!("echo {marker} > /workspace/{file} && cat /workspace/{file}")}),
                ),
            ),
            Step::reply(Reply::echo_tool_result("wrote: "))
                .containing(marker)
                .after_tool_result(true),
        ]
    };
    let mut script = Script::new()
        .step(parent(
            Reply::tool_call(
                "spawn_subagents",
                json!({"tasks": [{"task": "CHILD-WA write a", "label": "a"},
                                 {"task": "CHILD-WB write b", "label": "b"}]}),
            ),
            false,
        ))
        .step(parent(Reply::echo_tool_result("Parent saw: "), true));
    for s in writer("CHILD-WA", "a.txt")
        .into_iter()
        .chain(writer("CHILD-WB", "b.txt"))
    {
        script = script.step(s);
    }
    let mock = MockLlm::start(script);
    let (r, _) = run(&ws, request(&mock, PARENT));
    let r = r.expect("parent run");
    assert!(r.response.contains("2 ok, 0 failed"), "{}", r.response);
    let a = std::fs::read_to_string(env.files("files").join("a.txt")).unwrap();
    let b = std::fs::read_to_string(env.files("files").join("b.txt")).unwrap();
    assert_eq!((a.trim(), b.trim()), ("CHILD-WA", "CHILD-WB"));
    assert!(r.response.contains("wrote: CHILD-WA"), "{}", r.response);
}

#[test]
fn the_operator_sets_subagent_limits_in_config_toml_for_cli_runs() {
    let env = TestEnv::new();
    env.create("cfg");
    let tools_offered = |config_extra: &str| -> Vec<String> {
        let p = env.state().join("config.toml");
        let base = bulkhead_tests::TEST_CONFIG;
        std::fs::write(&p, format!("{base}\n{config_extra}\n")).unwrap();
        let mock = MockLlm::start(Script::new().step(Step::reply(Reply::text("done"))));
        let out = env
            .cmd()
            .env("ANTHROPIC_API_KEY", "mock-key")
            .args([
                "run",
                "cfg",
                PARENT,
                "--model",
                "anthropic/claude-sonnet-4-5",
                "--base-url",
                &mock.base_url(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            bulkhead_tests::text(&out.stderr)
        );
        tool_names(&mock.requests()[0].body)
    };
    assert!(tools_offered("").contains(&"spawn_subagents".to_string()));
    assert!(
        !tools_offered("[agent]\nsubagent_max_depth = 0").contains(&"spawn_subagents".to_string())
    );
    // A value out of range is an error naming the key, not a silent default.
    let p = env.state().join("config.toml");
    std::fs::write(&p, "[agent]\nsubagent_concurrency = 0\n").unwrap();
    let out = env.bulkhead(&["workspace", "list"]);
    assert_eq!(out.status.code(), Some(2), "{:?}", out);
    assert!(bulkhead_tests::text(&out.stderr).contains("agent.subagent_concurrency"));
}
