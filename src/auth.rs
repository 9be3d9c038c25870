//! Bearer-token authentication of gRPC calls (SPEC §10).
//!
//! The server's config lists tokens, each with a role: `admin` (every instance, every admin
//! call) or `owner:<owner key>` (only that owner's instances). [`Authenticator`] turns the
//! `authorization: Bearer <token>` header of a call into a [`Caller`], comparing the presented
//! token with every configured one in constant time, and the [`AuthInterceptor`] puts that
//! caller into the request's extensions for the service to read with [`caller`]. A missing or
//! unknown token is `UNAUTHENTICATED`.
//!
//! With no token configured, authentication is off and every caller is [`Caller::Admin`]; the
//! server then refuses to listen beyond loopback (see [`crate::server::check_listen`]).
//! Tokens never appear in `Debug` output or logs ([`Token`] redacts itself).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use subtle::{Choice, ConstantTimeEq as _};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::grpc::status::{permission_denied, unauthenticated};
use crate::instances::Caller;

/// Shortest token accepted in the config, in bytes: shorter secrets are guessable.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted in the config, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Why the auth configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A role is neither `admin` nor `owner:<owner key>`.
    #[error("invalid role {0:?}: expected \"admin\" or \"owner:<owner key>\" (e.g. owner:user:42)")]
    InvalidRole(String),
    /// A token is too short, too long, or has characters a header cannot carry.
    #[error(
        "auth token #{index} is unusable: tokens are {MIN_TOKEN_LEN}-{MAX_TOKEN_LEN} visible ASCII \
         characters without spaces"
    )]
    InvalidToken {
        /// Position of the token in `[auth] tokens` (0-based).
        index: usize,
    },
    /// The same token is listed twice.
    #[error("auth token #{index} is listed twice")]
    DuplicateToken {
        /// Position of the second occurrence (0-based).
        index: usize,
    },
}

/// A bearer token. Its `Debug` form is `***`, so it never reaches a log line; serialization
/// writes the real value (the config printer redacts it first).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// Wrap a secret.
    pub fn new(secret: impl Into<String>) -> Token {
        Token(secret.into())
    }

    /// The secret, for sending it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Role {
    /// Every instance and every admin call.
    Admin,
    /// Only the instances of this owner key (`user:<id>` or `org:<id>`).
    Owner(String),
}

impl TryFrom<String> for Role {
    type Error = Error;

    fn try_from(role: String) -> Result<Role, Error> {
        if role == "admin" {
            return Ok(Role::Admin);
        }
        match role.strip_prefix("owner:") {
            Some(owner) if clawdo_actors::instance::validate::owner(owner).is_ok() => {
                Ok(Role::Owner(owner.to_owned()))
            }
            _ => Err(Error::InvalidRole(role)),
        }
    }
}

impl From<Role> for String {
    fn from(role: Role) -> String {
        match role {
            Role::Admin => "admin".to_owned(),
            Role::Owner(owner) => format!("owner:{owner}"),
        }
    }
}

impl From<&Role> for Caller {
    fn from(role: &Role) -> Caller {
        match role {
            Role::Admin => Caller::Admin,
            Role::Owner(owner) => Caller::Owner(owner.clone()),
        }
    }
}

/// One configured token (`[[auth.tokens]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret clients send as `authorization: Bearer <token>`; 16-1024 visible ASCII
    /// characters.
    pub token: Token,
    /// `admin` or `owner:<owner key>`.
    pub role: Role,
}

/// Decides who a call is from.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    /// Configured tokens with the caller each stands for; empty: authentication is off.
    tokens: Vec<(Token, Caller)>,
}

impl Authenticator {
    /// An authenticator accepting `tokens`; with none, every caller is an admin.
    pub fn new(tokens: &[TokenConfig]) -> Result<Authenticator, Error> {
        let mut accepted: Vec<(Token, Caller)> = Vec::with_capacity(tokens.len());
        for (index, config) in tokens.iter().enumerate() {
            let secret = config.token.expose();
            let usable = (MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&secret.len())
                && secret.bytes().all(|b| b.is_ascii_graphic());
            if !usable {
                return Err(Error::InvalidToken { index });
            }
            if accepted.iter().any(|(known, _)| known == &config.token) {
                return Err(Error::DuplicateToken { index });
            }
            accepted.push((config.token.clone(), Caller::from(&config.role)));
        }
        Ok(Authenticator { tokens: accepted })
    }

    /// Whether calls must carry a token.
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The caller a call's metadata authenticates as.
    ///
    /// Every configured token is compared, each in constant time, whatever matches, so the
    /// time taken reveals neither which token matched nor how much of one did.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        if !self.is_enabled() {
            return Ok(Caller::Admin);
        }
        let header = metadata.get("authorization").ok_or_else(|| {
            unauthenticated("missing bearer token (authorization: Bearer <token>)")
        })?;
        let presented =
            header.to_str().ok().and_then(bearer).ok_or_else(|| {
                unauthenticated("the authorization header is not \"Bearer <token>\"")
            })?;
        let mut found: Option<&Caller> = None;
        for (token, caller) in &self.tokens {
            if bool::from(constant_time_eq(
                presented.as_bytes(),
                token.expose().as_bytes(),
            )) {
                found = Some(caller);
            }
        }
        found
            .cloned()
            .ok_or_else(|| unauthenticated("unknown bearer token"))
    }
}

/// The token of a `Bearer <token>` header value (the scheme is case-insensitive, RFC 6750).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Equality of `a` and `b` whose time depends only on the longer length: both are compared
/// over that length (zero-padded), and the lengths are compared as numbers.
fn constant_time_eq(a: &[u8], b: &[u8]) -> Choice {
    let len = a.len().max(b.len());
    let mut same = Choice::from(1);
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        same &= x.ct_eq(&y);
    }
    same & (a.len() as u64).ct_eq(&(b.len() as u64))
}

/// A tonic interceptor that authenticates every call and stores its [`Caller`] in the
/// request's extensions. With `admin_only`, a caller that is not an admin is refused with
/// `PERMISSION_DENIED` (used for `AdminService`).
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    /// Shared by every service of the server.
    auth: Arc<Authenticator>,
    /// Refuse non-admin callers.
    admin_only: bool,
}

impl AuthInterceptor {
    /// An interceptor admitting every authenticated caller.
    pub fn new(auth: Arc<Authenticator>) -> AuthInterceptor {
        AuthInterceptor {
            auth,
            admin_only: false,
        }
    }

    /// An interceptor admitting only admins.
    pub fn admin_only(auth: Arc<Authenticator>) -> AuthInterceptor {
        AuthInterceptor {
            auth,
            admin_only: true,
        }
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.auth.authenticate(request.metadata())?;
        if self.admin_only && caller != Caller::Admin {
            return Err(permission_denied("this call needs an admin token"));
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller [`AuthInterceptor`] stored in `request`. A request that did not pass through the
/// interceptor is `UNAUTHENTICATED` (fail closed).
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| unauthenticated("the call was not authenticated"))
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use tonic::service::Interceptor as _;
    use tonic::{Code, Request};

    use super::*;

    const ADMIN: &str = "admin-token-0123456789";
    const ALICE: &str = "alice-token-0123456789";

    fn auth() -> Authenticator {
        Authenticator::new(&[
            TokenConfig {
                token: Token::new(ADMIN),
                role: Role::Admin,
            },
            TokenConfig {
                token: Token::new(ALICE),
                role: Role::Owner("user:alice".into()),
            },
        ])
        .expect("valid tokens")
    }

    fn with_header(value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", value.parse().expect("a header value"));
        metadata
    }

    fn reason(status: &Status) -> String {
        use tonic_types::StatusExt as _;
        status
            .get_details_error_info()
            .expect("an ErrorInfo")
            .reason
    }

    #[test]
    fn roles_parse_and_print() {
        assert_eq!(Role::try_from("admin".to_owned()), Ok(Role::Admin));
        assert_eq!(
            Role::try_from("owner:user:42".to_owned()),
            Ok(Role::Owner("user:42".into()))
        );
        for bad in ["", "root", "owner:", "owner:42", "owner:team:x", "Admin"] {
            assert!(Role::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        assert_eq!(
            String::from(Role::Owner("org:acme".into())),
            "owner:org:acme"
        );
    }

    #[test]
    fn tokens_map_to_callers() {
        let auth = auth();
        assert!(auth.is_enabled());
        assert_eq!(
            auth.authenticate(&with_header(&format!("Bearer {ADMIN}")))
                .ok(),
            Some(Caller::Admin)
        );
        assert_eq!(
            auth.authenticate(&with_header(&format!("bearer {ALICE}")))
                .ok(),
            Some(Caller::Owner("user:alice".into()))
        );
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
        let auth = auth();
        let cases = [
            MetadataMap::new(),
            with_header(ADMIN),
            with_header(&format!("Basic {ADMIN}")),
            with_header("Bearer "),
            with_header("Bearer admin-token-012345678"),
            with_header("Bearer admin-token-01234567890"),
        ];
        for metadata in cases {
            let refused = auth.authenticate(&metadata).expect_err("refused");
            assert_eq!(refused.code(), Code::Unauthenticated);
            assert_eq!(reason(&refused), "UNAUTHENTICATED");
        }
    }

    #[test]
    fn without_tokens_everyone_is_admin() {
        let auth = Authenticator::new(&[]).expect("no tokens is valid");
        assert!(!auth.is_enabled());
        assert_eq!(
            auth.authenticate(&MetadataMap::new()).ok(),
            Some(Caller::Admin)
        );
    }

    #[test]
    fn weak_and_duplicate_tokens_are_refused() {
        let token = |secret: &str| TokenConfig {
            token: Token::new(secret),
            role: Role::Admin,
        };
        assert_eq!(
            Authenticator::new(&[token("short")]).map(|_| ()),
            Err(Error::InvalidToken { index: 0 })
        );
        assert_eq!(
            Authenticator::new(&[token(ADMIN), token("has a space in it!!")]).map(|_| ()),
            Err(Error::InvalidToken { index: 1 })
        );
        assert_eq!(
            Authenticator::new(&[token(ADMIN), token(ADMIN)]).map(|_| ()),
            Err(Error::DuplicateToken { index: 1 })
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        for (a, b, same) in [
            ("", "", true),
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("abc", "ab", false),
            ("ab", "abc", false),
            ("a\0", "a", false),
        ] {
            assert_eq!(
                bool::from(constant_time_eq(a.as_bytes(), b.as_bytes())),
                same,
                "{a:?} vs {b:?}"
            );
        }
    }

    #[test]
    fn tokens_are_redacted_in_debug_output() {
        let config = TokenConfig {
            token: Token::new(ADMIN),
            role: Role::Admin,
        };
        let printed = format!("{config:?} {:?}", auth());
        assert!(!printed.contains(ADMIN), "{printed}");
        assert!(printed.contains("***"), "{printed}");
    }

    #[test]
    fn the_interceptor_stores_the_caller_and_guards_admin_calls() {
        let auth = Arc::new(auth());
        let request = |token: &str| {
            let mut request = Request::new(());
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("a header value"),
            );
            request
        };

        let passed = AuthInterceptor::new(Arc::clone(&auth))
            .call(request(ALICE))
            .expect("an owner may call instance services");
        assert_eq!(
            caller(&passed).ok(),
            Some(Caller::Owner("user:alice".into()))
        );

        let refused = AuthInterceptor::admin_only(Arc::clone(&auth))
            .call(request(ALICE))
            .expect_err("an owner may not call admin services");
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert_eq!(reason(&refused), "PERMISSION_DENIED");

        let passed = AuthInterceptor::admin_only(auth)
            .call(request(ADMIN))
            .expect("an admin may");
        assert_eq!(caller(&passed).ok(), Some(Caller::Admin));

        let unauthenticated = caller(&Request::new(())).expect_err("no interceptor, no caller");
        assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    }
}
