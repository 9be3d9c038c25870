//! The real `clawdo` binary (the one cargo built for these tests) as a child process: a
//! command to spawn, and a bounded run to completion with a clean environment.

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
    tokio::time::timeout(within, command.output())
        .await
        .expect("clawdo finishes in time")
        .expect("clawdo runs")
}
