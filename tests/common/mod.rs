//! Helpers shared by the integration tests, defined once here instead of copied per file:
//! bounded polling ([`eventually`]) and a free loopback port at this level; the in-process
//! [`Runtime`](clawdo::Runtime) on a manual clock, its sim provider and provisioning of N
//! running instances in [`runtime`]; an in-process gRPC server, its clients and the decoding
//! of its error details in [`grpc`]; and the real `clawdo` binary run as a child in [`cli`].

// Each tests/*.rs is its own crate and uses a different subset of these helpers.
#![allow(
    dead_code,
    reason = "each test crate uses a different subset of the helpers"
)]
#![allow(clippy::expect_used, reason = "tests fail loudly on broken set-up")]

pub mod cli;
pub mod grpc;
pub mod runtime;

use std::future::Future;
use std::time::Duration;

/// How a bounded poll paces itself: one check every `every`, failing the test once `within`
/// has passed without success.
#[derive(Clone, Copy, Debug)]
pub struct Poll {
    /// The pause between two checks.
    pub every: Duration,
    /// How long the poll may last in all.
    pub within: Duration,
}

/// Polls of in-process work (provider tasks, background notices): every 5 ms, for at most
/// 20 s.
pub const IN_PROCESS: Poll = Poll {
    every: Duration::from_millis(5),
    within: Duration::from_secs(20),
};

/// Polls of end-to-end work (a server over loopback, a child process): every 10 ms, for at
/// most 30 s.
pub const END_TO_END: Poll = Poll {
    every: Duration::from_millis(10),
    within: Duration::from_secs(30),
};

/// Polls `check` until it yields `Some`, paced by [`IN_PROCESS`] (real work only: the manual
/// clock is never moved here), and returns the value; fails the test naming `what` when the
/// bound passes.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    check: impl FnMut() -> F,
) -> T {
    eventually_with(IN_PROCESS, what, check).await
}

/// Polls `check` until it yields `Some`, paced by `poll`, and returns the value; fails the
/// test naming `what` when `poll.within` passes.
pub async fn eventually_with<T, F: Future<Output = Option<T>>>(
    poll: Poll,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + poll.within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(poll.every).await;
    }
}

/// A loopback port that was free a moment ago (bound, read, released), for a child process
/// to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .expect("find a free loopback port")
        .port()
}
