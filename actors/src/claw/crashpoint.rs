//! Named points on the provision path where a crash test kills the process.
//!
//! The crash tests (SPEC §12) SIGKILL a server between each step of a provision and check what
//! a restart makes of the state left behind. Timing a kill from outside cannot hit a window
//! of a few microseconds (say, between the instance's commit and its report to the registry),
//! so the code announces each step here and a test build of the server installs an observer
//! that kills the process when the step it waits for is reached.
//!
//! Without an observer (every production process) [`reached`] is one atomic load.
//! The `fail` crate offers the same with more machinery, but only behind a cargo feature that
//! CI's plain `cargo test` would not enable for the server binary.

use std::sync::OnceLock;

/// `Begin` admitted a reservation (committed) and has not answered yet.
pub const ADMITTED: &str = "registry.admitted";
/// The reservation is `provider_started`; the instance has not been told.
pub const PROVIDER_STARTED: &str = "provision.provider_started";
/// The instance committed its record and started its provider task.
pub const INSTANCE_PROVISIONING: &str = "instance.provisioning";
/// The instance recorded the volume its provider task created.
pub const VOLUME_RECORDED: &str = "instance.volume_recorded";
/// The instance committed `running`; the registry has not been told.
pub const PROVISIONED: &str = "instance.provisioned";

/// Every point, in the order a provision passes them.
pub const ALL: [&str; 5] = [
    ADMITTED,
    PROVIDER_STARTED,
    INSTANCE_PROVISIONING,
    VOLUME_RECORDED,
    PROVISIONED,
];

type Observer = Box<dyn Fn(&'static str) + Send + Sync>;

static OBSERVER: OnceLock<Observer> = OnceLock::new();

/// Install the process's observer (once; later calls are ignored and return `false`).
pub fn set_observer(observer: impl Fn(&'static str) + Send + Sync + 'static) -> bool {
    OBSERVER.set(Box::new(observer)).is_ok()
}

/// Announce that `point` was reached.
#[inline]
pub fn reached(point: &'static str) {
    if let Some(observer) = OBSERVER.get() {
        observer(point);
    }
}
