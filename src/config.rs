//! The server's configuration: one [`Config`] with every knob, its defaults, and how it is
//! loaded (SPEC §10).
//!
//! Values are taken, later winning, from the defaults, a TOML file (`clawdo serve --config
//! <path>`), the environment, and explicit command-line flags (applied by the binary). Every
//! scalar key has an environment variable: `CLAWDO_` + its key path in upper snake case, dots
//! and dashes becoming `_` (`provider.sim.latency-ms` → `CLAWDO_PROVIDER_SIM_LATENCY_MS`,
//! `listen` → `CLAWDO_LISTEN`). The variables are derived from the config's own shape rather
//! than listed by hand: the config is serialized to a TOML tree, each leaf's path names its
//! variable, and a set variable is parsed as that leaf's TOML type. A value that does not parse
//! or is out of range fails start-up with an error naming the variable. Arrays (the auth
//! tokens) are configured in the file only.
//!
//! ```toml
//! listen = "127.0.0.1:50051"          # a non-loopback address needs [auth] tokens
//! data-dir = "./clawdo-data"
//! durability = "process"              # or "power"
//! idle-timeout-secs = 30
//! shutdown-deadline-secs = 10
//!
//! [[auth.tokens]]
//! token = "a-long-random-secret"
//! role = "admin"                      # or "owner:user:42"
//!
//! [provider]
//! kind = "sim"                        # or "process"
//! [provider.sim]
//! latency-ms = 0
//! failure-rate = 0.0
//! hang-rate = 0.0
//! seed = 0
//! [provider.limits]
//! max-in-flight = 16
//! # rate-per-sec = 50                 # unset: unlimited
//!
//! [instance]
//! reconcile-running = 300
//! reconcile-stopped = 1800
//! op-lease = 600
//! default-image = "claw:latest"
//!
//! [fleet]
//! max-concurrent = 2                  # scheduled operations at once, fleet-wide
//! lease = 1200                        # seconds a claimed slot is held before the reaper
//! pressure-delay = 30                 # seconds a claim waits while users' calls queue
//! max-pressure-deferral = 600         # at most this much waiting per target, in total
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use clawdo_actors::Durability;
use clawdo_actors::fleet::FleetConfig;
use clawdo_actors::instance::{InstanceConfig, validate};
use clawdo_actors::provider::LimiterConfig;
use clawdo_actors::provider::sim::{self, SimConfig};
use clawdo_actors::registry::RegistryConfig;

use crate::auth::{self, Authenticator, Token, TokenConfig};

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "CLAWDO_";

/// The default gRPC listen address, `127.0.0.1:50051`.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 50051);

/// What `--print-config` shows instead of a token.
pub const REDACTED: &str = "***";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("could not read the config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys or values of the wrong type.
    #[error("invalid config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        #[source]
        source: toml::de::Error,
    },
    /// An environment override does not parse or is out of range.
    #[error("invalid environment variable {var}: {reason}")]
    Env {
        /// The variable, e.g. `CLAWDO_PROVIDER_SIM_LATENCY_MS`.
        var: String,
        /// Why it was refused.
        reason: String,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// The `[provider.sim]` section is out of range.
    #[error("invalid [provider.sim] section")]
    Sim(#[source] sim::Error),
    /// The `[auth]` section is unusable.
    #[error("invalid [auth] section")]
    Auth(#[source] auth::Error),
    /// The config could not be written as TOML (a value TOML cannot hold).
    #[error("could not encode the config as TOML")]
    Encode(#[from] toml::ser::Error),
}

/// Everything a clawdo server is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct Config {
    /// Address the gRPC server listens on. Default `127.0.0.1:50051`. An address that is not
    /// loopback is refused unless `[auth]` lists at least one token.
    pub listen: SocketAddr,
    /// Directory holding every object file and the providers' state. Default `./clawdo-data`.
    pub data_dir: PathBuf,
    /// How commits reach the disk: `process` (survives a process crash; the default) or
    /// `power` (every commit fsynced).
    #[serde(with = "serde_durability")]
    pub durability: Durability,
    /// Seconds an object may sit idle before it hibernates (key `idle-timeout-secs`). Default
    /// 30; at least 1.
    #[serde(
        rename = "idle-timeout-secs",
        with = "clawdo_actors::config::serde_secs"
    )]
    pub idle_timeout: Duration,
    /// Seconds allowed, counted from the shutdown signal, for open gRPC calls to finish and
    /// then for the runtime to stop (key `shutdown-deadline-secs`). Default 10.
    #[serde(
        rename = "shutdown-deadline-secs",
        with = "clawdo_actors::config::serde_secs"
    )]
    pub shutdown_deadline: Duration,
    /// Bearer tokens. Default: none (every caller is an admin; loopback only).
    pub auth: AuthConfig,
    /// The machine provider. Default: the `sim` provider.
    pub provider: ProviderConfig,
    /// The instance class: reconcile periods and operation lease (seconds), default image.
    pub instance: InstanceConfig,
    /// The fleet: cap on concurrent scheduled operations (default 2), slot lease (seconds,
    /// default 1200), interactive-pressure delay (default 30) and its total bound (default
    /// 600).
    pub fleet: FleetConfig,
    /// Provision admission: instance limits per owner kind (`user-instance-limit` default 1,
    /// `org-instance-limit` default 100), `stale-after` and `check-interval` (seconds) of the
    /// registry's cleanup alarm.
    pub registry: RegistryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN,
            data_dir: PathBuf::from("./clawdo-data"),
            durability: Durability::Process,
            idle_timeout: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(10),
            auth: AuthConfig::default(),
            provider: ProviderConfig::default(),
            instance: InstanceConfig::default(),
            fleet: FleetConfig::default(),
            registry: RegistryConfig::default(),
        }
    }
}

/// `[auth]`: who may call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `[[auth.tokens]]` entries (`token`, `role`). Default: none, which turns authentication
    /// off.
    pub tokens: Vec<TokenConfig>,
}

/// Which machine provider the server uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// In-process simulated machines, persisted in `<data-dir>/providers/sim.db`.
    #[default]
    Sim,
    /// Machines are local OS processes running the built-in machine stub, kept under
    /// `<data-dir>/providers/process`.
    Process,
}

/// `[provider]`: the machine provider and its limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// `sim` (default) or `process`.
    pub kind: ProviderKind,
    /// `[provider.sim]`: latency (ms), failure and hang rates (0.0-1.0), seed. Used when `kind
    /// = "sim"`. Default: no latency, no failures.
    pub sim: SimConfig,
    /// `[provider.limits]`: most calls in flight (default 16) and calls started per second
    /// (default unlimited).
    pub limits: LimiterConfig,
}

impl Config {
    /// Load the defaults, then the TOML file at `path` (if any), then the environment overrides
    /// that `env` reports (pass `|name| std::env::var(name).ok()` for the process environment),
    /// and check the result.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Error> {
        let config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Config::from_toml(&text).map_err(|source| Error::Parse {
                    path: path.to_owned(),
                    source,
                })?
            }
            None => Config::default(),
        };
        config.validate()?;
        config.with_env(env)
    }

    /// Parse a TOML document (missing keys take their defaults). Does not [`validate`](Self::validate).
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// This config with the environment overrides `env` reports applied, each checked as it is
    /// applied so that an error names its variable.
    pub fn with_env(self, env: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let mut tree = toml::Value::try_from(&self)?;
        let mut config = self;
        for leaf in env_leaves()? {
            let Some(raw) = env(&leaf.var) else {
                continue;
            };
            let value = parse_leaf(&leaf.shape, &raw).map_err(|reason| Error::Env {
                var: leaf.var.clone(),
                reason,
            })?;
            set_path(&mut tree, &leaf.path, value);
            config = Config::deserialize(tree.clone()).map_err(|e| Error::Env {
                var: leaf.var.clone(),
                reason: e.message().to_owned(),
            })?;
            config.validate().map_err(|e| Error::Env {
                var: leaf.var.clone(),
                reason: error_chain(&e),
            })?;
        }
        Ok(config)
    }

    /// Check ranges the types cannot express.
    pub fn validate(&self) -> Result<(), Error> {
        if self.idle_timeout.is_zero() {
            return Err(Error::Invalid(
                "idle-timeout-secs must be at least 1".into(),
            ));
        }
        let instance = &self.instance;
        for (key, value) in [
            ("instance.reconcile-running", instance.reconcile_running),
            ("instance.reconcile-stopped", instance.reconcile_stopped),
            ("instance.op-lease", instance.op_lease),
        ] {
            if value.is_zero() {
                return Err(Error::Invalid(format!("{key} must be at least 1 second")));
            }
        }
        for (key, value) in [
            ("fleet.lease", self.fleet.lease),
            ("fleet.pressure-delay", self.fleet.pressure_delay),
        ] {
            if value.is_zero() {
                return Err(Error::Invalid(format!("{key} must be at least 1 second")));
            }
        }
        if self.fleet.max_pressure_deferral < self.fleet.pressure_delay {
            return Err(Error::Invalid(
                "fleet.max-pressure-deferral must be at least fleet.pressure-delay".into(),
            ));
        }
        validate::image_tag(&instance.default_image)
            .map_err(|e| Error::Invalid(format!("instance.default-image: {e}")))?;
        self.registry
            .validate()
            .map_err(|e| Error::Invalid(format!("registry: {e}")))?;
        self.provider.sim.validate().map_err(Error::Sim)?;
        self.authenticator()?;
        Ok(())
    }

    /// The authenticator the `[auth]` tokens describe.
    pub fn authenticator(&self) -> Result<Authenticator, Error> {
        Authenticator::new(&self.auth.tokens).map_err(Error::Auth)
    }

    /// The effective config as a TOML document, every token replaced by `"***"`.
    pub fn to_toml_redacted(&self) -> Result<String, Error> {
        let mut shown = self.clone();
        for token in &mut shown.auth.tokens {
            token.token = Token::new(REDACTED);
        }
        Ok(toml::to_string_pretty(&shown)?)
    }

    /// The name of every environment variable the config reads, in key order.
    pub fn env_vars() -> Result<Vec<String>, Error> {
        Ok(env_leaves()?.into_iter().map(|leaf| leaf.var).collect())
    }

    /// A config with every optional scalar set, so that serializing it shows every leaf (an
    /// unset `Option` is left out of TOML). New optional fields are added here.
    fn probe() -> Config {
        let mut probe = Config::default();
        probe.provider.limits.rate_per_sec = Some(NonZeroU32::MIN);
        probe
    }
}

/// One scalar of the config that an environment variable can set.
#[derive(Debug)]
struct EnvLeaf {
    /// Key path, e.g. `["provider", "sim", "latency-ms"]`.
    path: Vec<String>,
    /// `CLAWDO_PROVIDER_SIM_LATENCY_MS`.
    var: String,
    /// A value of the leaf's TOML type (from [`Config::probe`]).
    shape: toml::Value,
}

/// Every scalar leaf of the config, in key order.
fn env_leaves() -> Result<Vec<EnvLeaf>, Error> {
    let probe = toml::Value::try_from(Config::probe())?;
    let mut leaves = Vec::new();
    collect_leaves(&probe, &mut Vec::new(), &mut leaves);
    Ok(leaves)
}

fn collect_leaves(value: &toml::Value, path: &mut Vec<String>, out: &mut Vec<EnvLeaf>) {
    match value {
        toml::Value::Table(table) => {
            for (key, child) in table {
                path.push(key.clone());
                collect_leaves(child, path, out);
                path.pop();
            }
        }
        // Lists (the auth tokens) have no single variable; they come from the file.
        toml::Value::Array(_) => {}
        scalar => out.push(EnvLeaf {
            var: env_var_name(path),
            path: path.clone(),
            shape: scalar.clone(),
        }),
    }
}

/// `["provider", "sim", "latency-ms"]` → `CLAWDO_PROVIDER_SIM_LATENCY_MS`.
fn env_var_name(path: &[String]) -> String {
    let mut name = String::from(ENV_PREFIX);
    for (i, key) in path.iter().enumerate() {
        if i > 0 {
            name.push('_');
        }
        name.extend(key.chars().map(|c| {
            if c == '-' || c == '.' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        }));
    }
    name
}

/// Parse `raw` as a value of the same TOML type as `shape`.
fn parse_leaf(shape: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    let trimmed = raw.trim();
    match shape {
        toml::Value::String(_) => Ok(toml::Value::String(raw.to_owned())),
        toml::Value::Integer(_) => trimmed
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("{raw:?} is not an integer")),
        toml::Value::Float(_) => trimmed
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(toml::Value::Float)
            .ok_or_else(|| format!("{raw:?} is not a number")),
        toml::Value::Boolean(_) => trimmed
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .map_err(|_| format!("{raw:?} is not true or false")),
        other => Err(format!(
            "a {} cannot be set from the environment",
            other.type_str()
        )),
    }
}

/// Set `path` in `tree` to `value`, creating tables on the way.
fn set_path(tree: &mut toml::Value, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        *tree = value;
        return;
    };
    let mut node = tree;
    for key in parents {
        if !node.is_table() {
            *node = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(table) = node else {
            return;
        };
        node = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    if !node.is_table() {
        *node = toml::Value::Table(toml::Table::new());
    }
    if let toml::Value::Table(table) = node {
        table.insert(last.clone(), value);
    }
}

/// `error: cause: cause`, for an error reported inside another's message.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Serde for [`Durability`] as `"process"` / `"power"`.
mod serde_durability {
    use clawdo_actors::Durability;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(durability: &Durability, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match durability {
            Durability::Process => "process",
            Durability::Power => "power",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Durability, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use std::collections::HashMap;

    use clawdo_actors::provider::LimiterConfig;

    use super::*;
    use crate::auth::Role;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    const FILE: &str = r#"
        listen = "127.0.0.1:7000"
        data-dir = "/var/lib/clawdo"
        durability = "power"
        idle-timeout-secs = 5

        [[auth.tokens]]
        token = "admin-secret-0123456789"
        role = "admin"

        [[auth.tokens]]
        token = "owner-secret-0123456789"
        role = "owner:user:42"

        [provider]
        kind = "process"

        [provider.sim]
        latency-ms = 3
        failure-rate = 0.25

        [provider.limits]
        max-in-flight = 4
        rate-per-sec = 100

        [instance]
        op-lease = 60
        default-image = "claw:1.0"
    "#;

    #[test]
    fn defaults_match_the_spec() {
        let config = Config::default();
        assert_eq!(
            config.listen,
            "127.0.0.1:50051".parse().expect("an address")
        );
        assert_eq!(config.data_dir, PathBuf::from("./clawdo-data"));
        assert_eq!(config.durability, Durability::Process);
        assert_eq!(config.idle_timeout, Duration::from_secs(30));
        assert_eq!(config.shutdown_deadline, Duration::from_secs(10));
        assert!(config.auth.tokens.is_empty());
        assert_eq!(config.provider.kind, ProviderKind::Sim);
        assert_eq!(config.provider.sim, SimConfig::default());
        assert_eq!(config.provider.limits, LimiterConfig::default());
        assert_eq!(config.instance, InstanceConfig::default());
        config.validate().expect("the defaults are valid");
        assert_eq!(Config::load(None, env(&[])).expect("loads"), config);
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml("").expect("parses"), Config::default());
    }

    #[test]
    fn every_file_key_is_read() {
        let config = Config::from_toml(FILE).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.listen, "127.0.0.1:7000".parse().expect("an address"));
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/clawdo"));
        assert_eq!(config.durability, Durability::Power);
        assert_eq!(config.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.shutdown_deadline, Duration::from_secs(10));
        assert_eq!(config.auth.tokens.len(), 2);
        assert_eq!(config.auth.tokens[1].role, Role::Owner("user:42".into()));
        assert_eq!(config.provider.kind, ProviderKind::Process);
        assert_eq!(config.provider.sim.latency_ms, 3);
        assert_eq!(config.provider.sim.failure_rate, 0.25);
        assert_eq!(config.provider.limits.max_in_flight.get(), 4);
        assert_eq!(
            config.provider.limits.rate_per_sec.map(NonZeroU32::get),
            Some(100)
        );
        assert_eq!(config.instance.op_lease, Duration::from_secs(60));
        assert_eq!(config.instance.reconcile_running, Duration::from_secs(300));
        assert_eq!(config.instance.default_image, "claw:1.0");
    }

    #[test]
    fn unknown_keys_and_bad_values_in_the_file_are_refused() {
        for bad in [
            "lissen = \"127.0.0.1:1\"",
            "listen = \"localhost\"",
            "durability = \"disk\"",
            "idle-timeout-secs = -1",
            "[provider]\nkind = \"cloud\"",
            "[provider.sim]\nlatency = 3",
            "[provider.limits]\nmax-in-flight = 0",
            "[[auth.tokens]]\ntoken = \"admin-secret-0123456789\"\nrole = \"root\"",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
        for out_of_range in [
            "idle-timeout-secs = 0",
            "[provider.sim]\nhang-rate = 1.5",
            "[instance]\nop-lease = 0",
            "[instance]\ndefault-image = \"a b\"",
            "[[auth.tokens]]\ntoken = \"short\"\nrole = \"admin\"",
        ] {
            let config = Config::from_toml(out_of_range).expect("parses");
            assert!(config.validate().is_err(), "{out_of_range}");
        }
    }

    #[test]
    fn load_reads_the_file_then_the_environment() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("clawdo.toml");
        std::fs::write(&path, FILE).expect("write the file");
        let config = Config::load(
            Some(&path),
            env(&[
                ("CLAWDO_PROVIDER_SIM_LATENCY_MS", "5"),
                ("CLAWDO_LISTEN", "127.0.0.1:7001"),
                ("CLAWDO_INSTANCE_DEFAULT_IMAGE", "claw:2.0"),
                ("CLAWDO_PROVIDER_SIM_HANG_RATE", "1"),
                ("CLAWDO_PROVIDER_KIND", "sim"),
                ("CLAWDO_DURABILITY", "process"),
            ]),
        )
        .expect("loads");
        assert_eq!(config.provider.sim.latency_ms, 5);
        assert_eq!(
            config.provider.sim.failure_rate, 0.25,
            "the file's value stays"
        );
        assert_eq!(config.provider.sim.hang_rate, 1.0);
        assert_eq!(config.listen, "127.0.0.1:7001".parse().expect("an address"));
        assert_eq!(config.instance.default_image, "claw:2.0");
        assert_eq!(config.provider.kind, ProviderKind::Sim);
        assert_eq!(config.durability, Durability::Process);
        assert_eq!(config.idle_timeout, Duration::from_secs(5), "from the file");
    }

    #[test]
    fn optional_leaves_have_variables_too() {
        let config = Config::default()
            .with_env(env(&[("CLAWDO_PROVIDER_LIMITS_RATE_PER_SEC", "20")]))
            .expect("valid");
        assert_eq!(
            config.provider.limits.rate_per_sec.map(NonZeroU32::get),
            Some(20)
        );
    }

    #[test]
    fn bad_environment_values_name_their_variable() {
        for (var, value) in [
            ("CLAWDO_PROVIDER_SIM_LATENCY_MS", "fast"),
            ("CLAWDO_PROVIDER_SIM_LATENCY_MS", "-1"),
            ("CLAWDO_PROVIDER_SIM_FAILURE_RATE", "2"),
            ("CLAWDO_PROVIDER_SIM_FAILURE_RATE", "NaN"),
            ("CLAWDO_LISTEN", "localhost"),
            ("CLAWDO_DURABILITY", "disk"),
            ("CLAWDO_IDLE_TIMEOUT_SECS", "0"),
            ("CLAWDO_PROVIDER_LIMITS_MAX_IN_FLIGHT", "0"),
            ("CLAWDO_PROVIDER_KIND", "cloud"),
            ("CLAWDO_INSTANCE_DEFAULT_IMAGE", ""),
            ("CLAWDO_FLEET_MAX_CONCURRENT", "0"),
            ("CLAWDO_FLEET_MAX_CONCURRENT", "two"),
            ("CLAWDO_FLEET_LEASE", "0"),
        ] {
            let error = Config::default()
                .with_env(env(&[(var, value)]))
                .expect_err("refused");
            assert!(
                matches!(&error, Error::Env { var: v, .. } if v == var),
                "{var}={value}: {error:?}"
            );
            assert!(error.to_string().contains(var), "{error}");
        }
    }

    #[test]
    fn every_scalar_key_has_a_unique_variable() {
        let vars = Config::env_vars().expect("the config serializes");
        for expected in [
            "CLAWDO_LISTEN",
            "CLAWDO_DATA_DIR",
            "CLAWDO_DURABILITY",
            "CLAWDO_IDLE_TIMEOUT_SECS",
            "CLAWDO_SHUTDOWN_DEADLINE_SECS",
            "CLAWDO_PROVIDER_KIND",
            "CLAWDO_PROVIDER_SIM_LATENCY_MS",
            "CLAWDO_PROVIDER_SIM_FAILURE_RATE",
            "CLAWDO_PROVIDER_SIM_HANG_RATE",
            "CLAWDO_PROVIDER_SIM_SEED",
            "CLAWDO_PROVIDER_LIMITS_MAX_IN_FLIGHT",
            "CLAWDO_PROVIDER_LIMITS_RATE_PER_SEC",
            "CLAWDO_INSTANCE_RECONCILE_RUNNING",
            "CLAWDO_INSTANCE_RECONCILE_STOPPED",
            "CLAWDO_INSTANCE_OP_LEASE",
            "CLAWDO_INSTANCE_DEFAULT_IMAGE",
            "CLAWDO_FLEET_MAX_CONCURRENT",
            "CLAWDO_FLEET_LEASE",
            "CLAWDO_FLEET_PRESSURE_DELAY",
            "CLAWDO_FLEET_MAX_PRESSURE_DEFERRAL",
        ] {
            assert!(
                vars.iter().any(|v| v == expected),
                "{expected} missing from {vars:?}"
            );
        }
        let mut unique = vars.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), vars.len(), "{vars:?}");
    }

    #[test]
    fn the_printed_config_round_trips_with_tokens_redacted() {
        let config = Config::from_toml(FILE).expect("parses");
        let printed = config.to_toml_redacted().expect("encodes");
        assert!(!printed.contains("admin-secret"), "{printed}");
        assert!(!printed.contains("owner-secret"), "{printed}");
        assert!(printed.contains("token = \"***\""), "{printed}");
        let mut reread = Config::from_toml(&printed).expect("the printed config parses");
        for (token, original) in reread.auth.tokens.iter_mut().zip(&config.auth.tokens) {
            assert_eq!(token.token, Token::new(REDACTED));
            token.token = original.token.clone();
        }
        assert_eq!(reread, config);
        let defaults = Config::default().to_toml_redacted().expect("encodes");
        assert_eq!(
            Config::from_toml(&defaults).expect("parses"),
            Config::default()
        );
    }

    #[test]
    fn file_errors_name_the_file() {
        let missing = Path::new("/nonexistent/clawdo.toml");
        let error = Config::load(Some(missing), env(&[])).expect_err("no such file");
        assert!(
            error.to_string().contains("/nonexistent/clawdo.toml"),
            "{error}"
        );

        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "listen = ").expect("write the file");
        let error = Config::load(Some(&path), env(&[])).expect_err("not TOML");
        assert!(matches!(error, Error::Parse { .. }), "{error:?}");
    }
}
