//! The claw classes: `registry` (one per owner: admission and routes), `instance` (one claw
//! instance and its machine) and `fleet` (the singleton: scheduled actions and the fleet cap).
//!
//! # The call direction
//! A class awaits only a class below it, always through that class's typed handle:
//! `registry → instance → fleet`. Anything that goes upward (an instance reporting to its
//! registry, the fleet telling an instance) or needs no answer is a notice returned by the
//! handler and delivered after the commit. A CI guard in `.ci/run` keeps the direction.
//!
//! - [`registry`], [`instance`], [`fleet`]: the classes, each folder with the same core files
//!   (`mod.rs` the `Object` impl, `api.rs`, `handle.rs`, `config.rs`, `store.rs`).
//! - [`outbox`]: the [`Notice`](outbox::Notice)s and their delivery after the commit.
//! - [`fault`]: storage and runtime failures, with the reason the edge reports.
//! - [`crashpoint`]: named provision steps a crash test can kill the process at.

/// An enum whose variants have stable string forms (stored in databases and sent on the
/// wire): declares the enum (`Debug, Clone, Copy, PartialEq, Eq, Hash`, plus the attributes
/// given) and, for each variant, its text; generates `ALL` (declaration order, which is also
/// the codec's order: never reorder), `as_str`, `parse` and `Display`.
macro_rules! stable_names {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; <[&str]>::len(&[$($text),+])] = [$($name::$variant),+];

            /// The stable string form, as stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// Parse a stored name.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A handle's reply as the value of its expected one-field `variant`, or the module's
/// `unexpected` error for any other reply (the one place a reply of the wrong shape is
/// handled).
macro_rules! expect_reply {
    ($reply:expr, $variant:path) => {
        match $reply {
            $variant(value) => Ok(value),
            other => Err(unexpected(other)),
        }
    };
}

/// `From` conversions of storage and runtime errors into a class error's `Fault` variant.
macro_rules! fault_from {
    ($error:ty: $($source:ty),+) => {
        $(
            impl From<$source> for $error {
                fn from(e: $source) -> Self {
                    <$error>::Fault(e.into())
                }
            }
        )+
    };
}

pub mod crashpoint;
pub mod fault;
pub mod fleet;
pub mod instance;
pub mod outbox;
pub mod registry;
pub mod time;
