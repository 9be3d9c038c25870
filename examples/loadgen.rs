//! The clawdo load generator (SPEC §11: "measured with `cargo bench` and the load generator"):
//! drives a server's gRPC API over loopback HTTP/2 and prints one `FIGURE` line per scenario.
//!
//! Scenarios (`--scenario`, default `all`, which runs `get` then `provision`):
//! - `get`: provisions one instance per connection, waits until each runs, then keeps
//!   `--concurrency` unary `InstanceService/Get` calls in flight for `--duration-secs`, spread
//!   round-robin over `--connections` HTTP/2 channels. Reports calls/s, p50, p99 and max latency
//!   and errors, against the SPEC target of ≥ 30,000 calls/s at p99 ≤ 5 ms.
//! - `provision`: keeps `--concurrency` `InstanceService/Provision` calls in flight (a distinct
//!   owner per call, generated instance ids) for `--duration-secs`. The RPC latency is the
//!   admission latency: the call returns once the instance is `provisioning`. Afterwards it
//!   polls `Get` until every admitted instance is `running` (bounded by 60 s) and reports how
//!   many made it and how fast. The SPEC's ≥ 20,000 admissions/s target is a registry figure;
//!   over gRPC it also pays for the transport, so this is a conservative reading of it.
//!
//! `AdminService/Stats` (resident objects, activations, alarms) is printed after each scenario,
//! and a `machine:` line describes the host.
//!
//! ```text
//! cargo run --release --example loadgen -- --scenario get --duration-secs 10
//! cargo run --release --example loadgen -- --scenario provision --duration-secs 10
//! ```
//!
//! Without `--server`, an in-process server is started on `127.0.0.1:0` over a temporary data
//! directory with the sim provider at zero latency, and shut down at the end. Client and server
//! then share the machine's cores (2 on the reference machine), so the figures are a lower
//! bound for a client on another machine. To measure a separately started server instead:
//!
//! ```text
//! cargo run --release -- serve &
//! cargo run --release --example loadgen -- --server http://127.0.0.1:50051
//! ```
//!
//! A server with auth tokens needs an admin token (`--token` or `CLAWDO_TOKEN`): the load
//! provisions for many owners and reads `AdminService/Stats`. Owners are named
//! `user:lg-<run>-<n>` with a per-run tag, so repeated runs against one server do not collide.
//! Every loop is bounded both in time (`--duration-secs`, at most 120) and in count
//! (`--max-requests` per scenario).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use clawdo::client::{self, AdminClient, InstanceClient};
use clawdo::grpc::pb;
use clawdo::server;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// Longest a single RPC may take before it counts as an error (`TIMEOUT`).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the `get` scenario's instances to run.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait, after the provision phase, for admitted instances to run.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between polling rounds.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Longest wait for the in-process server to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Distinct error kinds kept per task (further kinds are counted as `OTHER`).
const MAX_ERROR_KINDS: usize = 16;
/// Target of SPEC §11 for gRPC unary calls over loopback: calls per second …
const GET_TARGET_PER_S: f64 = 30_000.0;
/// … at this p99, in milliseconds.
const GET_TARGET_P99_MS: f64 = 5.0;
/// Target of SPEC §11 for registry admission, per second.
const PROVISION_TARGET_PER_S: f64 = 20_000.0;

/// Load generator for a clawdo server's gRPC API.
#[derive(Debug, Parser)]
#[command(about, long_about = None)]
struct Args {
    /// Server URL (e.g. `http://127.0.0.1:50051`). Absent: start an in-process server on
    /// 127.0.0.1:0 over a temporary data directory (sim provider, zero latency).
    #[arg(long)]
    server: Option<String>,
    /// Which load to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Seconds each scenario's load runs (1-120).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    duration_secs: u64,
    /// Requests kept in flight (one task each).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// HTTP/2 connections; requests are spread over them round-robin.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    connections: u32,
    /// Most requests a scenario's load issues.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_requests: u64,
    /// Bearer token sent with every call (an admin token).
    #[arg(long, env = "CLAWDO_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// A load scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// `InstanceService/Provision`, then wait for the instances to run.
    Provision,
    /// `InstanceService/Get` on a few running instances.
    Get,
    /// `get`, then `provision`.
    All,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("{}", machine_description());

    let (url, local) = match &args.server {
        Some(url) => (url.clone(), None),
        None => {
            let local = LocalServer::start().await?;
            (local.url.clone(), Some(local))
        }
    };
    println!(
        "loadgen: server {url} ({}), scenario {:?}, {} s per scenario, concurrency {}, \
         {} connections, at most {} requests per scenario",
        if local.is_some() {
            "in-process: client and server share the cores"
        } else {
            "remote"
        },
        args.scenario,
        args.duration_secs,
        args.concurrency,
        args.connections,
        args.max_requests,
    );

    let outcome = run(&args, &url).await;
    if let Some(local) = local {
        local.stop().await?;
    }
    outcome
}

/// Runs the chosen scenarios against `url` and prints their figures.
async fn run(args: &Args, url: &str) -> anyhow::Result<()> {
    let load = Load::connect(args, url).await?;
    let mut figures = Vec::new();
    if matches!(args.scenario, Scenario::Get | Scenario::All) {
        figures.push(get_scenario(&load).await?);
        load.print_stats("after get").await;
    }
    if matches!(args.scenario, Scenario::Provision | Scenario::All) {
        figures.push(provision_scenario(&load).await?);
        load.print_stats("after provision").await;
    }
    println!();
    for figure in figures {
        println!("{figure}");
    }
    Ok(())
}

/// An in-process server, as the integration tests start one.
struct LocalServer {
    /// `http://127.0.0.1:<port>`.
    url: String,
    /// Sending makes [`server::serve`] shut down.
    shutdown: oneshot::Sender<()>,
    /// The task running [`server::serve`].
    handle: JoinHandle<Result<(), server::Error>>,
    /// Keeps the data directory alive as long as the server.
    data_dir: TempDir,
}

impl LocalServer {
    /// Starts a server on an ephemeral loopback port over a fresh temporary data directory,
    /// with the sim provider at zero latency.
    async fn start() -> anyhow::Result<LocalServer> {
        let data_dir = tempfile::tempdir().context("create a temporary data directory")?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind an ephemeral loopback port")?;
        let addr = listener.local_addr().context("read the bound address")?;
        let mut config = server::Config {
            listen: addr,
            data_dir: data_dir.path().to_path_buf(),
            ..server::Config::default()
        };
        config.provider.sim.latency_ms = 0;
        let runtime = Arc::new(
            server::build_runtime(&config)
                .await
                .context("build the runtime")?,
        );
        let (shutdown, stop) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::serve(config, runtime, listener, async move {
            // A dropped sender (an early error) also stops the server.
            let _ = stop.await;
        }));
        println!(
            "started an in-process server on {addr} over {}",
            data_dir.path().display()
        );
        Ok(LocalServer {
            url: format!("http://{addr}"),
            shutdown,
            handle,
            data_dir,
        })
    }

    /// Shuts the server down and waits (bounded) for it to finish.
    async fn stop(self) -> anyhow::Result<()> {
        let started = Instant::now();
        // The server may already have stopped on its own; then there is nothing to stop.
        let _ = self.shutdown.send(());
        tokio::time::timeout(STOP_TIMEOUT, self.handle)
            .await
            .context("the in-process server did not stop in time")?
            .context("the in-process server task panicked")?
            .context("the in-process server failed")?;
        println!(
            "in-process server stopped in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        let data_dir = self.data_dir.path().to_path_buf();
        self.data_dir
            .close()
            .with_context(|| format!("remove {}", data_dir.display()))?;
        Ok(())
    }
}

/// Connected clients and the load's settings.
struct Load {
    /// One `InstanceService` client per connection.
    instances: Vec<InstanceClient>,
    /// An `AdminService` client on the first connection.
    admin: AdminClient,
    /// Tasks issuing requests.
    concurrency: usize,
    /// How long each scenario's load runs.
    duration: Duration,
    /// Most requests per scenario.
    max_requests: u64,
    /// Tag making this run's owner keys unique on a long-lived server.
    run_tag: String,
}

impl Load {
    /// Opens `--connections` HTTP/2 connections to `url`.
    async fn connect(args: &Args, url: &str) -> anyhow::Result<Load> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("invalid server URL {url:?}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5));
        let token = args.token.as_deref();
        let mut channels: Vec<Channel> = Vec::new();
        for _ in 0..args.connections {
            channels.push(
                endpoint
                    .connect()
                    .await
                    .with_context(|| format!("connect to {url}"))?,
            );
        }
        let instances = channels
            .iter()
            .map(|channel| client::instance_client(channel.clone(), token))
            .collect::<Result<Vec<_>, _>>()?;
        let first = channels.first().context("at least one connection")?.clone();
        let admin = client::admin_client(first, token)?;
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        Ok(Load {
            instances,
            admin,
            concurrency: args.concurrency as usize,
            duration: Duration::from_secs(args.duration_secs),
            max_requests: args.max_requests,
            run_tag: format!("{millis:x}"),
        })
    }

    /// The client of connection `n` (round-robin).
    fn client(&self, n: usize) -> InstanceClient {
        self.instances[n % self.instances.len()].clone()
    }

    /// Prints `AdminService/Stats` (or why it could not be read).
    async fn print_stats(&self, when: &str) {
        let mut admin = self.admin.clone();
        match tokio::time::timeout(CALL_TIMEOUT, admin.stats(pb::StatsRequest {})).await {
            Ok(Ok(stats)) => {
                let stats = stats.into_inner();
                println!(
                    "stats {when}: resident_objects={} activations={} armed_alarms={} \
                     alarms_fired={}",
                    stats.resident_objects,
                    stats.activations,
                    stats.armed_alarms,
                    stats.alarms_fired,
                );
            }
            Ok(Err(status)) => println!(
                "stats {when}: unavailable ({})",
                client::describe_status(&status)
            ),
            Err(_) => println!("stats {when}: unavailable (no answer in time)"),
        }
    }
}

/// What one task measured.
#[derive(Debug, Default)]
struct TaskResult {
    /// Latency of each successful call, in microseconds.
    latencies_us: Vec<u32>,
    /// Failed calls by gRPC code (or `TIMEOUT`): count and one example.
    errors: HashMap<String, (u64, String)>,
    /// Ids of the instances this task provisioned.
    ids: Vec<String>,
}

impl TaskResult {
    fn with_capacity(capacity: usize) -> TaskResult {
        TaskResult {
            latencies_us: Vec::with_capacity(capacity),
            ..TaskResult::default()
        }
    }

    fn record(&mut self, elapsed: Duration) {
        self.latencies_us
            .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
    }

    fn error(&mut self, kind: &str, example: impl FnOnce() -> String) {
        let kind = if self.errors.len() < MAX_ERROR_KINDS || self.errors.contains_key(kind) {
            kind
        } else {
            "OTHER"
        };
        self.errors
            .entry(kind.to_owned())
            .or_insert_with(|| (0, example()))
            .0 += 1;
    }

    fn status(&mut self, status: &tonic::Status) {
        self.error(client::code_name(status.code()), || {
            client::describe_status(status)
        });
    }

    fn timeout(&mut self) {
        self.error("TIMEOUT", || format!("no answer within {CALL_TIMEOUT:?}"));
    }
}

/// The merged results of a scenario's tasks.
struct Summary {
    /// Sorted latencies of successful calls, in microseconds.
    sorted_us: Vec<u32>,
    /// Failed calls by kind: count and one example.
    errors: HashMap<String, (u64, String)>,
    /// Every provisioned id.
    ids: Vec<String>,
    /// From the first request to the last answer.
    elapsed: Duration,
}

impl Summary {
    fn merge(results: Vec<TaskResult>, elapsed: Duration) -> Summary {
        let mut sorted_us = Vec::with_capacity(results.iter().map(|r| r.latencies_us.len()).sum());
        let mut errors: HashMap<String, (u64, String)> = HashMap::new();
        let mut ids = Vec::new();
        for result in results {
            sorted_us.extend_from_slice(&result.latencies_us);
            ids.extend(result.ids);
            for (kind, (count, example)) in result.errors {
                errors.entry(kind).or_insert_with(|| (0, example)).0 += count;
            }
        }
        sorted_us.sort_unstable();
        Summary {
            sorted_us,
            errors,
            ids,
            elapsed,
        }
    }

    fn ok(&self) -> usize {
        self.sorted_us.len()
    }

    fn error_count(&self) -> u64 {
        self.errors.values().map(|(count, _)| count).sum()
    }

    fn per_second(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// The `p` quantile (nearest rank) in milliseconds; 0 without samples.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.sorted_us.is_empty() {
            return 0.0;
        }
        let len = self.sorted_us.len();
        let rank = ((p * len as f64).ceil() as usize).clamp(1, len);
        f64::from(self.sorted_us[rank - 1]) / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.sorted_us
            .last()
            .map_or(0.0, |&us| f64::from(us) / 1000.0)
    }

    /// Prints the human-readable lines for `name`.
    fn print(&self, name: &str) {
        println!(
            "{name}: {} ok, {} errors in {:.2} s = {:.0}/s; latency p50 {:.3} ms, p90 {:.3} ms, \
             p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            self.ok(),
            self.error_count(),
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.90),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.max_ms(),
        );
        print_errors(name, &self.errors);
    }
}

fn print_errors(name: &str, errors: &HashMap<String, (u64, String)>) {
    let mut errors: Vec<_> = errors.iter().collect();
    errors.sort_by_key(|(_, (count, _))| std::cmp::Reverse(*count));
    for (kind, (count, example)) in errors {
        println!("  {name} error {kind} x{count}, e.g. {example}");
    }
}

fn met(met: bool) -> &'static str {
    if met { "met" } else { "NOT MET" }
}

/// Scenario `get`: one running instance per connection, then unary `Get` under load.
async fn get_scenario(load: &Load) -> anyhow::Result<String> {
    println!();
    println!("== scenario get ==");
    let setup = Instant::now();
    let mut targets = Vec::new();
    for n in 0..load.instances.len() {
        let mut client = load.client(n);
        let created = call(client.provision(pb::ProvisionRequest {
            owner: format!("user:lg-{}-get-{n}", load.run_tag),
            image_tag: None,
            pinned: false,
            instance_id: None,
            idempotency_key: None,
        }))
        .await
        .context("provision an instance for the get scenario")?;
        let created = created
            .instance
            .context("the server answered a provision without an instance")?;
        targets.push(created.id);
    }
    let deadline = Instant::now() + SETUP_TIMEOUT;
    for (n, id) in targets.iter().enumerate() {
        let mut client = load.client(n);
        loop {
            let instance = call(client.get(pb::GetInstanceRequest {
                instance_id: id.clone(),
            }))
            .await
            .with_context(|| format!("read instance {id}"))?;
            match instance.status() {
                pb::InstanceStatus::Running => break,
                pb::InstanceStatus::Stopped | pb::InstanceStatus::Destroyed => anyhow::bail!(
                    "instance {id} did not start: {:?} ({})",
                    instance.status(),
                    instance.reason
                ),
                _ => {}
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "instance {id} is not running after {SETUP_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    println!(
        "get: {} instances running after {:.2} s; {} tasks call Get for {} s",
        targets.len(),
        setup.elapsed().as_secs_f64(),
        load.concurrency,
        load.duration.as_secs(),
    );

    let (results, started) = drive(load, |n, gate, mut result| {
        let mut client = load.client(n);
        let id = targets[n % targets.len()].clone();
        async move {
            while gate.next().is_some() {
                let request = pb::GetInstanceRequest {
                    instance_id: id.clone(),
                };
                timed(&mut result, client.get(request)).await;
            }
            result
        }
    })
    .await?;
    let summary = Summary::merge(results, started.elapsed());
    summary.print("get");

    let (rate, p99) = (summary.per_second(), summary.percentile_ms(0.99));
    let errors = summary.error_count();
    Ok(format!(
        "FIGURE grpc_get calls_per_s={rate:.0} p50_ms={:.3} p99_ms={p99:.3} max_ms={:.3} n={} \
         errors={errors} (target >=30000/s at p99<=5ms: {})",
        summary.percentile_ms(0.50),
        summary.max_ms(),
        summary.ok(),
        met(rate >= GET_TARGET_PER_S && p99 <= GET_TARGET_P99_MS && errors == 0),
    ))
}

/// Scenario `provision`: admissions under load, then the wait until they all run.
async fn provision_scenario(load: &Load) -> anyhow::Result<String> {
    println!();
    println!("== scenario provision ==");
    println!(
        "provision: {} tasks call Provision (one owner per call) for {} s",
        load.concurrency,
        load.duration.as_secs(),
    );
    let (results, started) = drive(load, |n, gate, mut result| {
        let mut client = load.client(n);
        let run_tag = load.run_tag.clone();
        async move {
            while let Some(seq) = gate.next() {
                let request = pb::ProvisionRequest {
                    owner: format!("user:lg-{run_tag}-{seq}"),
                    image_tag: None,
                    pinned: false,
                    instance_id: None,
                    idempotency_key: Some(format!("lg-{run_tag}-{seq}")),
                };
                let answer = timed(&mut result, client.provision(request)).await;
                if let Some(instance) = answer.and_then(|answer| answer.instance) {
                    result.ids.push(instance.id);
                }
            }
            result
        }
    })
    .await?;
    let rpc_done = Instant::now();
    let mut summary = Summary::merge(results, rpc_done - started);
    summary.print("provision");

    let admitted = std::mem::take(&mut summary.ids);
    let total = admitted.len();
    println!("provision: waiting (at most {SETTLE_TIMEOUT:?}) for {total} instances to run");
    let settled = wait_running(load, admitted).await?;
    let settle_s = settled.last_running_at.map_or_else(
        || rpc_done.elapsed().as_secs_f64(),
        |at| at.saturating_duration_since(rpc_done).as_secs_f64(),
    );
    let end_to_end = settled
        .last_running_at
        .unwrap_or_else(Instant::now)
        .saturating_duration_since(started)
        .as_secs_f64();
    println!(
        "provision: {}/{total} running {settle_s:.2} s after the last admission \
         ({:.0} running/s end to end over {end_to_end:.2} s); {} stopped or destroyed, \
         {} still pending after {} polling rounds",
        settled.running,
        settled.running as f64 / end_to_end.max(f64::MIN_POSITIVE),
        settled.failed.len(),
        settled.pending,
        settled.rounds,
    );
    for (id, status, reason) in settled.failed.iter().take(5) {
        println!("  provision: {id} ended {status:?} ({reason})");
    }
    print_errors("provision wait", &settled.errors);

    let rate = summary.per_second();
    Ok(format!(
        "FIGURE provision rpc_per_s={rate:.0} p50_ms={:.3} p99_ms={:.3} n={} running={}/{total} \
         in {settle_s:.2}s (target: see SPEC §11 registry admission >=20000/s: {})",
        summary.percentile_ms(0.50),
        summary.percentile_ms(0.99),
        summary.ok(),
        settled.running,
        met(rate >= PROVISION_TARGET_PER_S && summary.error_count() == 0),
    ))
}

/// How the admitted instances ended up.
struct Settled {
    /// Instances seen running.
    running: usize,
    /// Instances seen stopped or destroyed: id, status, reason.
    failed: Vec<(String, pb::InstanceStatus, String)>,
    /// Instances neither running nor failed when the wait ended.
    pending: usize,
    /// When the last instance was first seen running.
    last_running_at: Option<Instant>,
    /// Polling rounds made.
    rounds: u32,
    /// Failed `Get` calls while polling.
    errors: HashMap<String, (u64, String)>,
}

/// Polls `Get` (split over `concurrency` tasks) for every id not yet seen running, round after
/// round, until all are running or settled otherwise or [`SETTLE_TIMEOUT`] has passed.
async fn wait_running(load: &Load, ids: Vec<String>) -> anyhow::Result<Settled> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut settled = Settled {
        running: 0,
        failed: Vec::new(),
        pending: ids.len(),
        last_running_at: None,
        rounds: 0,
        errors: HashMap::new(),
    };
    let mut pending = ids;
    while !pending.is_empty() && Instant::now() < deadline {
        settled.rounds += 1;
        let chunk = pending.len().div_ceil(load.concurrency).max(1);
        let mut tasks = Vec::new();
        for (n, ids) in pending.chunks(chunk).enumerate() {
            let mut client = load.client(n);
            let ids = ids.to_vec();
            tasks.push(tokio::spawn(async move {
                let mut round = Round::default();
                let mut ids = ids.into_iter();
                for id in ids.by_ref() {
                    if Instant::now() >= deadline {
                        round.pending.push(id);
                        break;
                    }
                    let request = pb::GetInstanceRequest {
                        instance_id: id.clone(),
                    };
                    match tokio::time::timeout(CALL_TIMEOUT, client.get(request)).await {
                        Ok(Ok(instance)) => {
                            let instance = instance.into_inner();
                            match instance.status() {
                                pb::InstanceStatus::Running => {
                                    round.running += 1;
                                    round.last_running_at = Some(Instant::now());
                                }
                                status @ (pb::InstanceStatus::Stopped
                                | pb::InstanceStatus::Destroyed) => {
                                    round.failed.push((id, status, instance.reason));
                                }
                                _ => round.pending.push(id),
                            }
                        }
                        Ok(Err(status)) => {
                            round.errors.status(&status);
                            round.pending.push(id);
                        }
                        Err(_) => {
                            round.errors.timeout();
                            round.pending.push(id);
                        }
                    }
                }
                round.pending.extend(ids);
                round
            }));
        }
        let mut next = Vec::new();
        for round in join_all(tasks).await? {
            settled.running += round.running;
            settled.failed.extend(round.failed);
            next.extend(round.pending);
            settled.last_running_at = settled.last_running_at.max(round.last_running_at);
            for (kind, (count, example)) in round.errors.errors {
                settled.errors.entry(kind).or_insert_with(|| (0, example)).0 += count;
            }
        }
        pending = next;
        if !pending.is_empty() {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    settled.pending = pending.len();
    Ok(settled)
}

/// What one polling task saw in one round.
#[derive(Default)]
struct Round {
    running: usize,
    last_running_at: Option<Instant>,
    failed: Vec<(String, pb::InstanceStatus, String)>,
    pending: Vec<String>,
    errors: TaskResult,
}

/// Lets the load's tasks issue calls until its duration has passed or it issued
/// `max_requests` calls in all.
#[derive(Clone)]
struct Gate {
    /// Calls issued so far, by every task.
    issued: Arc<AtomicU64>,
    /// When the load ends.
    deadline: Instant,
    /// Most calls in all.
    max_requests: u64,
}

impl Gate {
    /// The sequence number of the next call to issue, or `None` once the load is over.
    fn next(&self) -> Option<u64> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let seq = self.issued.fetch_add(1, Ordering::Relaxed);
        (seq < self.max_requests).then_some(seq)
    }
}

/// Runs the load: `load.concurrency` tasks, task `n` being `task(n, gate, result)`, which
/// issues calls while the shared [`Gate`] lets it and records them in `result`; returns every
/// task's result and when the load started.
async fn drive<F, T>(load: &Load, task: F) -> anyhow::Result<(Vec<TaskResult>, Instant)>
where
    F: Fn(usize, Gate, TaskResult) -> T,
    T: Future<Output = TaskResult> + Send + 'static,
{
    let capacity = per_task_capacity(load);
    let started = Instant::now();
    let gate = Gate {
        issued: Arc::new(AtomicU64::new(0)),
        deadline: started + load.duration,
        max_requests: load.max_requests,
    };
    let mut tasks = Vec::with_capacity(load.concurrency);
    for n in 0..load.concurrency {
        let result = TaskResult::with_capacity(capacity);
        tasks.push(tokio::spawn(task(n, gate.clone(), result)));
    }
    Ok((join_all(tasks).await?, started))
}

/// Makes one call of the load, bounded by [`CALL_TIMEOUT`], and records its latency or its
/// failure in `result`; returns the answer of a successful call.
async fn timed<T>(
    result: &mut TaskResult,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<T> {
    let start = Instant::now();
    let answer = tokio::time::timeout(CALL_TIMEOUT, call).await;
    let elapsed = start.elapsed();
    match answer {
        Ok(Ok(answer)) => {
            result.record(elapsed);
            Some(answer.into_inner())
        }
        Ok(Err(status)) => {
            result.status(&status);
            None
        }
        Err(_) => {
            result.timeout();
            None
        }
    }
}

/// Latency slots reserved per task up front (bounded, the vectors grow beyond it).
fn per_task_capacity(load: &Load) -> usize {
    let per_task = load.max_requests / load.concurrency as u64 + 1;
    usize::try_from(per_task).unwrap_or(usize::MAX).min(1 << 16)
}

/// Awaits every task, failing if one panicked.
async fn join_all<T>(tasks: Vec<JoinHandle<T>>) -> anyhow::Result<Vec<T>> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.context("a load task panicked")?);
    }
    Ok(results)
}

/// Awaits one RPC made during set-up, bounded by [`CALL_TIMEOUT`].
async fn call<T>(
    rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    let answer = tokio::time::timeout(CALL_TIMEOUT, rpc)
        .await
        .context("no answer in time")?
        .map_err(client::Error::from)?;
    Ok(answer.into_inner())
}

/// `machine: <cores> cores, <MemTotal>, <CPU model>`.
fn machine_description() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = proc_field("/proc/meminfo", "MemTotal")
        .map(|total| {
            let gib = total
                .split_whitespace()
                .next()
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| format!(" ({:.1} GiB)", kb / (1024.0 * 1024.0)))
                .unwrap_or_default();
            format!("MemTotal {total}{gib}")
        })
        .unwrap_or_else(|| "MemTotal unknown".to_owned());
    let model =
        proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".to_owned());
    format!("machine: {cores} cores, {memory}, {model}")
}

/// The value of the first `key: value` line of `path`.
fn proc_field(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == key).then(|| value.trim().to_owned())
    })
}
