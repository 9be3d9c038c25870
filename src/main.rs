//! The `clawdo` binary: parses flags, loads the config, sets up logging, and runs the
//! library's server until Ctrl-C or SIGTERM; or runs one `clawdo instance …` or
//! `clawdo action …` client command.
//! Everything else lives in the `clawdo` library.
//!
//! Exit codes: 0 on success, 1 on an error (printed as `error: …` for client commands), 2 for
//! a usage error (clap's).

mod cli;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use clawdo::server;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

use crate::cli::{Cli, Command, InstanceArgs, LogFormat, MachineStubArgs, ServeArgs};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Instance(args) => instance(args).await,
        Command::Action(args) => action(args).await,
        Command::Serve(args) => serve(args).await,
        Command::DemoLoad(args) => hidden(clawdo::demo_load::run(args.into())).await,
        Command::DemoProvision(args) => hidden(clawdo::demo_provision::run(args.into())).await,
        Command::MachineStub(args) => hidden(machine_stub(args)).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `clawdo instance …`: one client call; errors print as `error: REASON: message`.
async fn instance(args: InstanceArgs) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    Ok(args.run(&mut stdout).await?)
}

/// `clawdo action …`: one client command; errors print as `error: REASON: message`.
async fn action(args: cli::action::ActionArgs) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    Ok(args.run(&mut stdout).await?)
}

/// The hidden commands (`demo-load`, `demo-provision`, `machine-stub`): text logs to stderr,
/// then `command`.
async fn hidden<E>(command: impl Future<Output = Result<(), E>>) -> anyhow::Result<()>
where
    anyhow::Error: From<E>,
{
    init_tracing(LogFormat::Text);
    command.await?;
    Ok(())
}

/// `clawdo machine-stub`: serve the health check until SIGTERM (or Ctrl-C), then exit 0.
async fn machine_stub(args: MachineStubArgs) -> anyhow::Result<()> {
    let listener = clawdo::machine_stub::bind(args.port)
        .await
        .with_context(|| format!("could not bind 127.0.0.1:{}", args.port))?;
    let terminate =
        signal(SignalKind::terminate()).context("could not install the SIGTERM handler")?;
    clawdo::machine_stub::run(listener, shutdown_signal(terminate)).await?;
    Ok(())
}

/// `clawdo serve`: load the config (or print it), refuse a listen address the auth policy
/// forbids before binding, then serve until a signal.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config(|name| std::env::var(name).ok())?;
    if args.print_config {
        print!("{}", config.to_toml_redacted()?);
        return Ok(());
    }
    init_tracing(args.log_format);
    let listener = server::bind_config(&config).await?;
    let terminate =
        signal(SignalKind::terminate()).context("could not install the SIGTERM handler")?;
    tracing::info!(
        listen = %config.listen,
        shutdown_deadline = ?config.shutdown_deadline,
        idle_timeout = ?config.idle_timeout,
        auth_tokens = config.auth.tokens.len(),
        "starting clawdo",
    );
    server::run(config, listener, shutdown_signal(terminate)).await?;
    tracing::info!("clawdo stopped");
    Ok(())
}

/// Log to stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on the first Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal(mut terminate: Signal) {
    let received = tokio::select! {
        result = tokio::signal::ctrl_c() => match result {
            Ok(()) => "SIGINT",
            Err(error) => {
                // Without a SIGINT handler only SIGTERM can stop the server.
                tracing::warn!(%error, "could not listen for Ctrl-C");
                terminate.recv().await;
                "SIGTERM"
            }
        },
        _ = terminate.recv() => "SIGTERM",
    };
    tracing::info!(signal = received, "shutdown signal received");
}
