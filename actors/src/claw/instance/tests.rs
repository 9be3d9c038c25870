//! Table tests of the instance's pure transitions. No runtime, no clock.
