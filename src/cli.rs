//! Command-line flags of the `clawdo` binary (clap derive) and their translation into the
//! library's [`server::Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clawdo::actors::Durability;
use clawdo::server;

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
    /// Test support: write to demo counters as fast as possible and print one `ack` line per
    /// committed write (used by the crash-recovery tests, which SIGKILL this process).
    #[command(hide = true)]
    DemoLoad(DemoLoadArgs),
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

/// Flags of `clawdo serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory holding every object file.
    #[arg(long, default_value = "./clawdo-data")]
    pub data_dir: PathBuf,
    /// Address the gRPC server listens on. Must be loopback until authentication exists.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Seconds an object may sit idle before it hibernates.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// Seconds allowed, after SIGTERM or Ctrl-C, for open calls to finish and the runtime to stop.
    #[arg(long, default_value_t = 10)]
    pub shutdown_deadline_secs: u64,
    /// Commit durability: `process` (survives a process crash) or `power` (fsync every commit).
    #[arg(long, default_value = "process")]
    pub durability: Durability,
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
    /// The server options these flags describe.
    pub fn config(&self) -> server::Config {
        server::Config {
            data_dir: self.data_dir.clone(),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            durability: self.durability,
            shutdown_deadline: Duration::from_secs(self.shutdown_deadline_secs),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn serve_args(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let cli = Cli::try_parse_from(["clawdo", "serve"].iter().chain(args))?;
        match cli.command {
            Command::Serve(serve) => Ok(serve),
            Command::DemoLoad(_) | Command::MachineStub(_) => {
                unreachable!("parsed from a serve command line")
            }
        }
    }

    #[test]
    fn serve_defaults_match_the_spec() {
        let args = serve_args(&[]).expect("no flags is valid");
        assert_eq!(
            args.listen,
            "127.0.0.1:50051".parse().expect("valid address")
        );
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.config(), server::Config::default());
    }

    #[test]
    fn serve_flags_are_parsed() {
        let args = serve_args(&[
            "--data-dir",
            "/tmp/x",
            "--listen",
            "[::1]:7000",
            "--idle-timeout-secs",
            "5",
            "--shutdown-deadline-secs",
            "0",
            "--log-format",
            "json",
        ])
        .expect("valid flags");
        assert_eq!(args.listen, "[::1]:7000".parse().expect("valid address"));
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(
            args.config(),
            server::Config {
                data_dir: PathBuf::from("/tmp/x"),
                idle_timeout: Duration::from_secs(5),
                durability: Durability::Process,
                shutdown_deadline: Duration::ZERO,
            }
        );
    }

    #[test]
    fn bad_flag_values_are_rejected() {
        for bad in [
            &["--idle-timeout-secs", "0"][..],
            &["--listen", "localhost"],
            &["--log-format", "xml"],
            &["--shutdown-deadline-secs", "-1"],
        ] {
            assert!(serve_args(bad).is_err(), "{bad:?} must be rejected");
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
