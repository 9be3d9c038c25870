//! Command-line flags of the `clawdo` binary (clap derive): `clawdo serve` flags and how they
//! override the loaded [`Config`], and the `clawdo instance …` commands, which call a server
//! through [`clawdo::client`] and print text or JSON. The `clawdo action …` commands live in
//! [`action`].

pub mod action;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clawdo::actors::Durability;
use clawdo::client::{self, InstanceClient, WatchItem};
use clawdo::config::{self, Config};
use clawdo::grpc::pb;

/// clawdo: a Durable-Object-style runtime hosting a fleet of claw instances.
#[derive(Debug, Parser)]
#[command(name = "clawdo", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The `clawdo` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the clawdo server: the object runtime behind the gRPC API.
    Serve(ServeArgs),
    /// Manage claw instances on a running server.
    Instance(InstanceArgs),
    /// Schedule and follow admin actions (bulk restarts, version changes) on a running server.
    Action(action::ActionArgs),
    /// Test support: write to demo counters as fast as possible and print one `ack` line per
    /// committed write (used by the crash-recovery tests, which SIGKILL this process).
    #[command(hide = true)]
    DemoLoad(DemoLoadArgs),
    /// Test support: one provision, SIGKILLing this process at a named step (used by the
    /// admission crash tests).
    #[command(hide = true)]
    DemoProvision(DemoProvisionArgs),
    /// The process provider's default machine: answer HTTP health checks on
    /// `127.0.0.1:<port>` until SIGTERM.
    #[command(hide = true)]
    MachineStub(MachineStubArgs),
}

/// Flags of the hidden `clawdo machine-stub`.
#[derive(Debug, Args)]
pub struct MachineStubArgs {
    /// Loopback port to serve the health check on.
    #[arg(long)]
    pub port: u16,
}

/// Flags of the hidden `clawdo demo-provision`.
#[derive(Debug, Args)]
pub struct DemoProvisionArgs {
    /// Directory holding every object file.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Owner key.
    #[arg(long)]
    pub owner: String,
    /// Idempotency key.
    #[arg(long)]
    pub idempotency_key: String,
    /// SIGKILL the process when the provision reaches this step.
    #[arg(long)]
    pub crash_at: Option<String>,
}

/// Flags of the hidden `clawdo demo-load`.
#[derive(Debug, Args)]
pub struct DemoLoadArgs {
    /// Directory holding every object file.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Commit durability: `process` or `power`.
    #[arg(long, default_value = "process")]
    pub durability: Durability,
    /// Number of counters written round-robin.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub objects: u32,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub writers: u32,
    /// Stop after this many writes in total (the load is always bounded).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_writes: u64,
    /// Alarm time (Unix ms) set on every counter before the writes start.
    #[arg(long)]
    pub alarm_at: Option<i64>,
}

/// `clawdo demo-provision`: one provision, killed at a named step for the crash tests.
impl From<DemoProvisionArgs> for clawdo::demo_provision::Options {
    fn from(args: DemoProvisionArgs) -> Self {
        Self {
            data_dir: args.data_dir,
            owner: args.owner,
            idempotency_key: args.idempotency_key,
            crash_at: args.crash_at,
        }
    }
}

/// `clawdo demo-load`: the bounded write load of the crash tests.
impl From<DemoLoadArgs> for clawdo::demo_load::Options {
    fn from(args: DemoLoadArgs) -> Self {
        Self {
            data_dir: args.data_dir,
            durability: args.durability,
            objects: args.objects,
            writers: args.writers,
            max_writes: args.max_writes,
            alarm_at: args.alarm_at,
        }
    }
}

/// Flags of `clawdo serve`. Each flag given overrides the config file and the `CLAWDO_*`
/// environment; defaults come from [`Config`].
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (see `--print-config` for every key).
    #[arg(long, env = "CLAWDO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective config as TOML (tokens redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Directory holding every object file [default: ./clawdo-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address the gRPC server listens on; not loopback only with auth tokens configured
    /// [default: 127.0.0.1:50051].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Seconds an object may sit idle before it hibernates [default: 30].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds allowed, after SIGTERM or Ctrl-C, for open calls to finish and the runtime to
    /// stop [default: 10].
    #[arg(long)]
    pub shutdown_deadline_secs: Option<u64>,
    /// Commit durability: `process` (survives a process crash) or `power` (fsync every commit)
    /// [default: process].
    #[arg(long)]
    pub durability: Option<Durability>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl ServeArgs {
    /// The effective config: defaults, the `--config` file, the `CLAWDO_*` variables `env`
    /// reports, then the flags given here.
    pub fn config(&self, env: impl Fn(&str) -> Option<String>) -> Result<Config, config::Error> {
        let mut config = Config::load(self.config.as_deref(), env)?;
        self.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Override `config` with every flag that was given.
    pub fn apply(&self, config: &mut Config) {
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(secs) = self.idle_timeout_secs {
            config.idle_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = self.shutdown_deadline_secs {
            config.shutdown_deadline = Duration::from_secs(secs);
        }
        if let Some(durability) = self.durability {
            config.durability = durability;
        }
    }
}

/// `clawdo instance`: the connection flags and one instance command.
#[derive(Debug, Args)]
pub struct InstanceArgs {
    /// Where and how to connect.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: InstanceCommand,
}

/// Flags shared by every client command.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// gRPC address of the clawdo server.
    #[arg(long, global = true, env = "CLAWDO_SERVER", default_value = client::DEFAULT_SERVER)]
    pub server: String,
    /// Bearer token (needed when the server has auth tokens configured).
    #[arg(long, global = true, env = "CLAWDO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON (one object per instance or event, one per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The `clawdo instance` commands.
#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Create an instance and start provisioning its machine.
    Provision {
        /// Owner key (`user:<id>` or `org:<id>`); an owner token may leave it out.
        #[arg(long)]
        owner: Option<String>,
        /// Image tag [default: the server's default image].
        #[arg(long)]
        image: Option<String>,
        /// Pin the image against fleet version changes.
        #[arg(long)]
        pin: bool,
        /// Instance id [default: generated].
        #[arg(long)]
        id: Option<String>,
        /// Idempotency key: repeating the command with the same key answers the same
        /// provision instead of starting another [default: a fresh random key].
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait until the instance runs (exit 1 if provisioning fails).
        #[arg(long)]
        wait: bool,
    },
    /// Show one instance.
    Get {
        /// Instance id.
        id: String,
    },
    /// List instances (every page).
    List {
        /// Only this owner's instances.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Start a stopped instance.
    Start {
        /// Instance id.
        id: String,
    },
    /// Stop a running instance.
    Stop {
        /// Instance id.
        id: String,
    },
    /// Restart a running instance.
    Restart {
        /// Instance id.
        id: String,
    },
    /// Move an instance to another image tag.
    SetVersion {
        /// Instance id.
        id: String,
        /// The new image tag.
        image: String,
        /// Also pin the image.
        #[arg(long, conflicts_with = "unpin")]
        pin: bool,
        /// Also remove the pin.
        #[arg(long)]
        unpin: bool,
    },
    /// Destroy an instance's machine and volume.
    Destroy {
        /// Instance id.
        id: String,
    },
    /// Print the instance's state, then every event, until it is destroyed (or Ctrl-C).
    Watch {
        /// Instance id.
        id: String,
    },
}

impl InstanceArgs {
    /// Connect, run the command, print its result to `out`.
    pub async fn run(self, out: &mut impl Write) -> Result<(), client::Error> {
        let channel = client::connect(&self.connection.server).await?;
        let mut client = client::instance_client(channel, self.connection.token.as_deref())?;
        let printer = Printer {
            json: self.connection.json,
        };
        run_instance_command(&mut client, self.command, printer, out).await
    }
}

/// Renders results as text or JSON.
#[derive(Debug, Clone, Copy)]
struct Printer {
    json: bool,
}

impl Printer {
    fn instance(self, out: &mut impl Write, instance: &pb::Instance) -> Result<(), client::Error> {
        if self.json {
            writeln!(out, "{}", client::instance_json(instance))?;
        } else {
            write!(out, "{}", client::render_instance(instance))?;
        }
        Ok(())
    }

    fn list(self, out: &mut impl Write, instances: &[pb::Instance]) -> Result<(), client::Error> {
        if self.json {
            for instance in instances {
                writeln!(out, "{}", client::instance_json(instance))?;
            }
        } else {
            write!(out, "{}", client::render_table(instances))?;
        }
        Ok(())
    }

    fn watch_item(self, out: &mut impl Write, item: &WatchItem) -> Result<(), client::Error> {
        if self.json {
            writeln!(out, "{}", client::watch_item_json(item))?;
        } else {
            write!(out, "{}", client::render_watch_item(item))?;
        }
        out.flush()?;
        Ok(())
    }
}

async fn run_instance_command(
    client: &mut InstanceClient,
    command: InstanceCommand,
    printer: Printer,
    out: &mut impl Write,
) -> Result<(), client::Error> {
    let instance = match command {
        InstanceCommand::Provision {
            owner,
            image,
            pin,
            id,
            idempotency_key,
            wait,
        } => {
            let answer = client
                .provision(pb::ProvisionRequest {
                    owner: owner.unwrap_or_default(),
                    image_tag: image,
                    pinned: pin,
                    instance_id: id,
                    idempotency_key,
                })
                .await?
                .into_inner();
            let Some(instance) = answer.instance else {
                return Err(client::Error::Protocol(
                    "the server answered a provision without an instance".into(),
                ));
            };
            if !answer.created {
                eprintln!("{}", client::provision_note(answer.reservation.as_ref()));
            }
            if wait {
                client::wait_running(client, &instance.id, |_| Ok(())).await?
            } else {
                instance
            }
        }
        InstanceCommand::Get { id } => client
            .get(pb::GetInstanceRequest { instance_id: id })
            .await?
            .into_inner(),
        InstanceCommand::List { owner } => {
            let instances = client::list_all(client, owner.as_deref()).await?;
            return printer.list(out, &instances);
        }
        InstanceCommand::Start { id } => client
            .start(pb::StartInstanceRequest { instance_id: id })
            .await?
            .into_inner(),
        InstanceCommand::Stop { id } => client
            .stop(pb::StopInstanceRequest { instance_id: id })
            .await?
            .into_inner(),
        InstanceCommand::Restart { id } => client
            .restart(pb::RestartInstanceRequest { instance_id: id })
            .await?
            .into_inner(),
        InstanceCommand::SetVersion {
            id,
            image,
            pin,
            unpin,
        } => {
            let pin = match (pin, unpin) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            client
                .change_version(pb::ChangeVersionRequest {
                    instance_id: id,
                    image_tag: image,
                    pin,
                })
                .await?
                .into_inner()
        }
        InstanceCommand::Destroy { id } => client
            .destroy(pb::DestroyInstanceRequest { instance_id: id })
            .await?
            .into_inner(),
        InstanceCommand::Watch { id } => {
            // The server ends the stream once the instance is destroyed.
            let watched =
                client::wait_until(client, &id, |_| false, |item| printer.watch_item(out, item))
                    .await;
            return match watched {
                Ok(_) | Err(client::Error::WatchEnded(_)) => Ok(()),
                Err(error) => Err(error),
            };
        }
    };
    printer.instance(out, &instance)
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn serve_args(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let cli = Cli::try_parse_from(["clawdo", "serve"].iter().chain(args))?;
        match cli.command {
            Command::Serve(serve) => Ok(serve),
            _ => unreachable!("parsed from a serve command line"),
        }
    }

    fn instance_args(args: &[&str]) -> Result<InstanceArgs, clap::Error> {
        let cli = Cli::try_parse_from(["clawdo", "instance"].iter().chain(args))?;
        match cli.command {
            Command::Instance(instance) => Ok(instance),
            _ => unreachable!("parsed from an instance command line"),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn serve_defaults_match_the_spec() {
        let args = serve_args(&[]).expect("no flags is valid");
        assert_eq!(args.log_format, LogFormat::Text);
        assert!(!args.print_config);
        assert_eq!(args.config(no_env).expect("valid"), Config::default());
    }

    #[test]
    fn serve_flags_override_the_config() {
        let args = serve_args(&[
            "--data-dir",
            "/tmp/x",
            "--listen",
            "[::1]:7000",
            "--idle-timeout-secs",
            "5",
            "--shutdown-deadline-secs",
            "0",
            "--durability",
            "power",
            "--log-format",
            "json",
        ])
        .expect("valid flags");
        assert_eq!(args.log_format, LogFormat::Json);
        let from_env = |name: &str| {
            (name == "CLAWDO_LISTEN" || name == "CLAWDO_PROVIDER_SIM_LATENCY_MS").then(|| {
                if name == "CLAWDO_LISTEN" {
                    "127.0.0.1:1"
                } else {
                    "7"
                }
                .to_owned()
            })
        };
        let config = args.config(from_env).expect("valid");
        assert_eq!(
            config,
            Config {
                data_dir: PathBuf::from("/tmp/x"),
                listen: "[::1]:7000".parse().expect("valid address"),
                idle_timeout: Duration::from_secs(5),
                durability: Durability::Power,
                shutdown_deadline: Duration::ZERO,
                provider: config::ProviderConfig {
                    sim: clawdo::actors::provider::sim::SimConfig {
                        latency_ms: 7,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                ..Config::default()
            },
            "a flag beats the environment, which beats the defaults"
        );
    }

    #[test]
    fn bad_flag_values_are_rejected() {
        for bad in [
            &["--idle-timeout-secs", "0"][..],
            &["--listen", "localhost"],
            &["--log-format", "xml"],
            &["--shutdown-deadline-secs", "-1"],
            &["--durability", "disk"],
        ] {
            assert!(serve_args(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn instance_commands_parse_with_global_flags_anywhere() {
        let args = instance_args(&["get", "inst-1", "--server", "http://127.0.0.1:1", "--json"])
            .expect("valid");
        assert_eq!(args.connection.server, "http://127.0.0.1:1");
        assert!(args.connection.json);
        assert!(matches!(args.command, InstanceCommand::Get { id } if id == "inst-1"));

        let args =
            instance_args(&["--token", "t", "set-version", "i", "claw:2", "--pin"]).expect("valid");
        assert_eq!(args.connection.token.as_deref(), Some("t"));
        assert!(matches!(
            args.command,
            InstanceCommand::SetVersion {
                pin: true,
                unpin: false,
                ..
            }
        ));

        let args = instance_args(&["provision", "--owner", "user:1", "--wait"]).expect("valid");
        assert!(matches!(
            args.command,
            InstanceCommand::Provision {
                wait: true,
                pin: false,
                ..
            }
        ));
    }

    #[test]
    fn bad_instance_command_lines_are_rejected() {
        for bad in [
            &["get"][..],
            &["set-version", "i"],
            &["set-version", "i", "claw:2", "--pin", "--unpin"],
            &["frobnicate", "i"],
        ] {
            assert!(instance_args(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn machine_stub_takes_a_port() {
        let cli =
            Cli::try_parse_from(["clawdo", "machine-stub", "--port", "8080"]).expect("valid flags");
        assert!(matches!(
            cli.command,
            Command::MachineStub(MachineStubArgs { port: 8080 })
        ));
        for bad in [&["--port", "70000"][..], &[]] {
            let args = ["clawdo", "machine-stub"].iter().chain(bad);
            assert!(
                Cli::try_parse_from(args).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
