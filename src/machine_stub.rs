//! The built-in machine stub: what the process provider runs as a "machine" by default.
//!
//! `clawdo machine-stub --port <P>` binds `127.0.0.1:<P>` and answers every request with a
//! plain `200 ok`, so recovery can wait for a replacement machine to become healthy exactly as
//! it would for a real one. It speaks just enough HTTP/1.1 for a health probe (no HTTP
//! dependency) and exits cleanly on SIGTERM, which is how the process provider stops machines.

use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The one answer the stub gives.
pub const HEALTH_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// Longest request head read before answering anyway.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The process provider's default machine command: this executable's `machine-stub`, with
/// the provider's `{port}` placeholder. Meaningful when called from the `clawdo` binary (an
/// embedder points the provider at its own command instead).
pub fn default_process_command() -> Vec<String> {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|path| path.to_str().map(str::to_owned))
        .unwrap_or_else(|| "clawdo".to_owned());
    vec![exe, "machine-stub".into(), "--port".into(), "{port}".into()]
}

/// Bind the stub's listener on `127.0.0.1:<port>` (port 0 picks a free one).
pub async fn bind(port: u16) -> io::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await
}

/// Answer health checks on `listener` until `shutdown` completes; open connections are then
/// dropped.
pub async fn run(listener: TcpListener, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    tokio::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(answer(stream));
                }
                Err(error) => {
                    tracing::warn!(%error, "machine stub could not accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Read the request head (bounded in size and time), then answer `200 ok` and close.
async fn answer(mut stream: TcpStream) {
    let mut head = Vec::with_capacity(256);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0_u8; 1024];
        while head.len() < MAX_REQUEST_HEAD && !head_complete(&head) {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        io::Result::Ok(())
    })
    .await;
    // A client that sent nothing, or whose connection failed, gets no answer; a slow or
    // oversized head is answered anyway.
    if head.is_empty() || matches!(read, Ok(Err(_))) {
        return;
    }
    if let Err(error) = async {
        stream.write_all(HEALTH_RESPONSE).await?;
        stream.shutdown().await
    }
    .await
    {
        tracing::debug!(%error, "machine stub could not answer");
    }
}

/// Whether `head` holds a whole request head (ends with an empty line).
fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test
mod tests {
    use super::*;

    async fn request(port: u16, text: &[u8], close_write: bool) -> Vec<u8> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        stream.write_all(text).await.unwrap();
        if close_write {
            stream.shutdown().await.unwrap();
        }
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        reply
    }

    #[tokio::test]
    async fn answers_health_checks_until_shutdown() {
        let listener = bind(0).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(listener, async {
            let _ = stopped.await;
        }));

        let full = request(port, b"GET /health HTTP/1.1\r\nhost: stub\r\n\r\n", false).await;
        assert_eq!(full, HEALTH_RESPONSE);
        let bare = request(port, b"GET / HTTP/1.0\n", true).await;
        assert_eq!(bare, HEALTH_RESPONSE);
        let empty = request(port, b"", true).await;
        assert!(empty.is_empty(), "no request, no answer");

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_err()
        );
    }

    #[test]
    fn the_default_command_runs_this_executable() {
        let command = default_process_command();
        assert_eq!(command[1..], ["machine-stub", "--port", "{port}"]);
        assert!(!command[0].is_empty());
    }
}
