//! What the benches share: the tokio runtime they run on.

/// The 2-worker multi-thread tokio runtime (timers and I/O enabled) that every bench is driven
/// from.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}
