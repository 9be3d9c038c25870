//! The real `clawdo` binary (the one cargo built for these tests) as a child process: a
//! command to spawn, a bounded run to completion (with a clean environment, or as the test
//! set the command up), and the checks of what a run printed and how it exited.

use std::process::{Output, Stdio};
use std::time::Duration;

/// Longest a single CLI invocation may take, unless the test says otherwise.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// A command running the `clawdo` binary, its stdin from `/dev/null`, killed if dropped
/// before it exits (a failed test leaves no child behind).
pub fn clawdo_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawdo"));
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// `clawdo <args>` with a clean environment plus `env`, run to completion within
/// [`RUN_TIMEOUT`].
pub async fn clawdo(args: &[&str], env: &[(&str, &str)]) -> Output {
    clawdo_within(RUN_TIMEOUT, args, env).await
}

/// `clawdo <args>` with a clean environment plus `env`, run to completion; fails the test if
/// it takes longer than `within`.
pub async fn clawdo_within(within: Duration, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = clawdo_command();
    command.args(args).env_clear().envs(env.iter().copied());
    output_within(within, &mut command).await
}

/// Runs `command` to completion and returns its output; fails the test if it takes longer
/// than `within` or cannot be run.
pub async fn output_within(within: Duration, command: &mut tokio::process::Command) -> Output {
    tokio::time::timeout(within, command.output())
        .await
        .expect("clawdo finishes in time")
        .expect("clawdo runs")
}

/// What the run printed on stdout (it must be UTF-8).
pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

/// What the run printed on stderr (it must be UTF-8).
pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("UTF-8 output")
}

/// Asserts that the run succeeded, showing its status and output otherwise.
#[track_caller]
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// Asserts that the run succeeded and printed `text` on stdout.
#[track_caller]
pub fn assert_prints(output: &Output, text: &str) {
    assert_success(output);
    assert!(stdout(output).contains(text), "{}", stdout(output));
}

/// Asserts that the run exited with 1 and an error on stderr that starts with `prefix`.
#[track_caller]
pub fn assert_error(output: &Output, prefix: &str) {
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(output).starts_with(prefix), "{}", stderr(output));
}

/// Asserts that the run failed with `text` somewhere on stderr.
#[track_caller]
pub fn assert_fails_mentioning(output: &Output, text: &str) {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(text), "{stderr}");
}
