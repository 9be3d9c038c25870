//! The process provider: machines are real local OS processes, volumes are directories,
//! snapshots are recursive copies.
//!
//! Layout under the configured root: `volumes/<id>/` (a machine's working directory, with its
//! log `<machine id>.log`), `snapshots/<id>/`, and `process.db`, a small SQLite file with the
//! machines (image, volume, metadata, whether they should be running, pid, port), volumes and
//! snapshots, so a server restart finds its machines again. Machines keep running when the
//! server stops (`kill_on_drop(false)`, own process group); a restarted server recognises them
//! by pid and start time in `/proc` (Linux), so a reused pid is not mistaken for a machine.
//!
//! A machine is `running` only while its process is alive: one that exited on its own is
//! reported `stopped` — the "unexpected stop" that recovery repairs (SPEC §9). Each machine's
//! calls are serialized by a per-machine lock; calls on different machines run in parallel.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawdo_storage::Migration;
use clawdo_storage::rusqlite::{self, Connection, Transaction, params};
use futures::future::BoxFuture;
use rustix::process::{Pid, Signal, kill_process};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use super::ledger::{
    self, Ledger, MACHINE_COLUMN_COUNT, delete_volume_row, insert_machine, load_machine_with,
    not_found,
};
use super::{
    MachineId, MachineInfo, MachineProvider, MachineSpec, MachineState, ProviderError, SnapshotId,
    VolumeId, VolumeSource, lock,
};

/// How long a machine gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a process that is not our child is checked while it exits.
const EXIT_POLL: Duration = Duration::from_millis(25);

/// The schema of `process.db`.
const SCHEMA: &str = "
    -- Last number issued per id kind (machine, volume, snapshot): ids are never reused.
    CREATE TABLE counters (kind TEXT PRIMARY KEY, last INTEGER NOT NULL);
    -- Volumes that exist; the directory is volumes/<id>.
    CREATE TABLE volumes (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, name TEXT NOT NULL);
    -- Snapshots (directory snapshots/<id>) outlive their volume.
    CREATE TABLE snapshots (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, volume TEXT NOT NULL);
    CREATE INDEX snapshots_by_volume ON snapshots (volume, seq);
    -- Every machine ever created; a destroyed one keeps its row in state 'destroyed'.
    CREATE TABLE machines (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        state TEXT NOT NULL,          -- requested state (MachineState::as_str); 'running'
                                      -- counts only while the process is alive
        image TEXT NOT NULL,
        volume TEXT NOT NULL,
        metadata BLOB NOT NULL,       -- BTreeMap<String, String> through the storage codec
        pid INTEGER,                  -- while running
        port INTEGER,                 -- while running: the {port} it was given
        start_ticks INTEGER           -- while running: /proc/<pid>/stat start time
    );
    CREATE INDEX machines_by_volume ON machines (volume, seq);
";

/// Schema steps, run by the storage crate's migration runner (`PRAGMA user_version`; a file
/// written by a newer build is refused). The ledger's tests run its queries on it.
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    name: "process provider state",
    sql: SCHEMA,
}];

/// Why the process provider could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is unusable; nothing was created.
    #[error("invalid process provider config: {0}")]
    InvalidConfig(String),
    /// The root directories could not be created.
    #[error("process provider directory {path}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// `process.db` could not be opened or initialized.
    #[error("process provider database")]
    Database(#[from] rusqlite::Error),
    /// The schema could not be brought up to date (e.g. the file was written by a newer
    /// clawdo).
    #[error("process provider database schema")]
    Schema(#[from] clawdo_storage::Error),
}

/// Where the process provider keeps its machines and what it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProcessConfig {
    /// Directory holding `volumes/`, `snapshots/` and `process.db` (must be valid UTF-8: its
    /// paths are substituted into the command).
    pub root: PathBuf,
    /// Program and arguments of every machine; `{port}` is replaced by a free loopback port
    /// chosen at each start, `{volume}` by the volume directory. Required; the `clawdo` crate
    /// fills in its built-in machine stub when the config leaves it empty.
    #[serde(default)]
    pub command: Vec<String>,
}

/// The process provider (see the module docs).
#[derive(Debug)]
pub struct ProcessProvider {
    config: ProcessConfig,
    /// `process.db`: its volumes, snapshots and machines.
    ledger: Ledger,
    /// Processes this server spawned, by machine id: waited on to detect exits and reap them.
    children: Mutex<HashMap<String, Child>>,
    /// One lock per machine so that starts, stops and destroys of one machine never interleave.
    machine_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// One `machines` row.
#[derive(Debug, Clone)]
struct Row {
    info: MachineInfo,
    pid: Option<u32>,
    port: Option<u16>,
    start_ticks: Option<u64>,
}

impl ProcessProvider {
    /// Open (or create) the provider under `config.root`.
    pub fn open(config: ProcessConfig) -> Result<ProcessProvider, Error> {
        if config.command.first().is_none_or(String::is_empty) {
            return Err(Error::InvalidConfig("command must name a program".into()));
        }
        if config.root.to_str().is_none() {
            return Err(Error::InvalidConfig(format!(
                "root {} is not valid UTF-8",
                config.root.display()
            )));
        }
        for dir in [volumes_dir(&config.root), snapshots_dir(&config.root)] {
            fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir, source })?;
        }
        let mut conn = Connection::open(config.root.join("process.db"))?;
        ledger::prepare(&mut conn, MIGRATIONS)?;
        Ok(ProcessProvider {
            config,
            ledger: Ledger::new(conn, "process"),
            children: Mutex::new(HashMap::new()),
            machine_locks: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    /// The directory of an existing volume.
    pub fn volume_path(&self, volume: &VolumeId) -> Result<PathBuf, ProviderError> {
        let id = volume.0.clone();
        self.ledger.transact(|tx| ledger::require_volume(tx, &id))?;
        Ok(volumes_dir(&self.config.root).join(&volume.0))
    }

    /// The pid of a machine's process while it runs.
    pub fn machine_pid(&self, machine: &MachineId) -> Result<Option<u32>, ProviderError> {
        let row = self.row(&machine.0)?;
        Ok(self.is_running(&row).then_some(row.pid).flatten())
    }

    /// The loopback port a running machine was given (its `{port}`).
    pub fn machine_port(&self, machine: &MachineId) -> Result<Option<u16>, ProviderError> {
        let row = self.row(&machine.0)?;
        Ok(self.is_running(&row).then_some(row.port).flatten())
    }

    /// Copy a volume into a new snapshot.
    pub async fn snapshot_volume(&self, volume: &VolumeId) -> Result<SnapshotId, ProviderError> {
        let from = volume.0.clone();
        let (seq, id) = self
            .ledger
            .transact(|tx| ledger::reserve_snapshot(tx, &from))?;
        let src = volumes_dir(&self.config.root).join(&from);
        let dst = snapshots_dir(&self.config.root).join(&id);
        copy_tree_blocking(src, dst).await?;
        self.ledger
            .transact(|tx| ledger::insert_snapshot(tx, seq, &id, &from).map(Ok))?;
        Ok(SnapshotId(id))
    }

    /// Machine `id`'s row, destroyed or not.
    fn row(&self, id: &str) -> Result<Row, ProviderError> {
        self.ledger
            .transact(|tx| Ok(load_row(tx, id)?.ok_or_else(|| not_found("machine", id))))
    }

    /// A row that exists and is not destroyed.
    fn live_row(&self, id: &str) -> Result<Row, ProviderError> {
        let row = self.row(id)?;
        if row.info.state == MachineState::Destroyed {
            return Err(not_found("machine", id));
        }
        Ok(row)
    }

    /// Record machine `id`'s state and, while it runs, its process (pid, port, start time).
    fn set_row_state(
        &self,
        id: &str,
        state: MachineState,
        process: Option<(u32, u16, Option<u64>)>,
    ) -> Result<(), ProviderError> {
        let (pid, port, ticks) = match process {
            Some((pid, port, ticks)) => (Some(pid), Some(port), ticks.map(|t| t as i64)),
            None => (None, None, None),
        };
        self.ledger.transact(|tx| {
            tx.execute(
                "UPDATE machines SET state = ?2, pid = ?3, port = ?4, start_ticks = ?5
                 WHERE id = ?1",
                params![id, state.as_str(), pid, port, ticks],
            )?;
            Ok(Ok(()))
        })
    }

    /// The lock serializing calls on machine `id`.
    fn machine_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(lock(&self.machine_locks).entry(id.to_owned()).or_default())
    }

    /// Whether the machine should run and its process is alive.
    fn is_running(&self, row: &Row) -> bool {
        if row.info.state != MachineState::Running {
            return false;
        }
        let mut children = lock(&self.children);
        if let Some(child) = children.get_mut(&row.info.id.0) {
            match child.try_wait() {
                Ok(None) => return true,
                // Exited (and now reaped), or not waitable: judge by /proc below.
                Ok(Some(_)) | Err(_) => {
                    children.remove(&row.info.id.0);
                }
            }
        }
        row.pid.is_some_and(|pid| pid_alive(pid, row.start_ticks))
    }

    /// What the provider reports for a row.
    fn effective(&self, row: Row) -> MachineInfo {
        let mut info = row.info.clone();
        if info.state == MachineState::Running && !self.is_running(&row) {
            info.state = MachineState::Stopped;
        }
        info
    }

    /// Spawn the machine's process and record it as running. Caller holds the machine lock.
    fn spawn(&self, row: &Row) -> Result<(), ProviderError> {
        let id = &row.info.id.0;
        let volume_dir = volumes_dir(&self.config.root).join(&row.info.volume.0);
        let port = free_port()
            .map_err(|e| ProviderError::Unavailable(format!("no free loopback port: {e}")))?;
        let volume_text = volume_dir.to_string_lossy();
        let port_text = port.to_string();
        let args: Vec<String> = self
            .config
            .command
            .iter()
            .map(|arg| {
                arg.replace("{port}", &port_text)
                    .replace("{volume}", &volume_text)
            })
            .collect();
        let Some((program, rest)) = args.split_first() else {
            return Err(ProviderError::Failed("no command configured".into()));
        };
        let log = open_log(&volume_dir, id)
            .map_err(|e| ProviderError::Failed(format!("machine {id} log file: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| ProviderError::Failed(format!("machine {id} log file: {e}")))?;
        let mut child = Command::new(program)
            .args(rest)
            .current_dir(&volume_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(false)
            .process_group(0)
            .spawn()
            .map_err(|e| ProviderError::Failed(format!("spawning {program} for {id}: {e}")))?;
        let Some(pid) = child.id() else {
            return Err(ProviderError::Failed(format!(
                "machine {id} exited before it could be recorded"
            )));
        };
        let ticks = start_ticks(pid);
        if let Err(error) = self.set_row_state(id, MachineState::Running, Some((pid, port, ticks)))
        {
            // Not recorded means not started: leave nothing running behind.
            let _ = child.start_kill();
            return Err(error);
        }
        tracing::debug!(machine = %id, pid, port, "machine process started");
        lock(&self.children).insert(id.clone(), child);
        Ok(())
    }

    /// End the machine's process: SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL.
    /// Caller holds the machine lock.
    async fn terminate(&self, row: &Row) {
        let id = &row.info.id.0;
        let child = lock(&self.children).remove(id);
        if let Some(mut child) = child {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            if let Some(pid) = child.id() {
                signal(pid, Signal::TERM);
            }
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                tracing::warn!(machine = %id, "machine ignored SIGTERM; killing it");
                if let Err(error) = child.kill().await {
                    tracing::warn!(machine = %id, %error, "could not kill machine process");
                }
            }
            return;
        }
        // Started by an earlier server run: not our child, so poll /proc until it is gone.
        let Some(pid) = row.pid else { return };
        if !pid_alive(pid, row.start_ticks) {
            return;
        }
        signal(pid, Signal::TERM);
        if wait_gone(pid, row.start_ticks, STOP_GRACE).await {
            return;
        }
        tracing::warn!(machine = %id, pid, "machine ignored SIGTERM; killing it");
        signal(pid, Signal::KILL);
        wait_gone(pid, row.start_ticks, STOP_GRACE).await;
    }
}

fn volumes_dir(root: &Path) -> PathBuf {
    root.join("volumes")
}

fn snapshots_dir(root: &Path) -> PathBuf {
    root.join("snapshots")
}

fn open_log(volume_dir: &Path, machine: &str) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(volume_dir.join(format!("{machine}.log")))
}

/// A loopback port nobody listens on right now.
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Send `signal` to `pid`; a process that is already gone is fine.
fn signal(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if let Err(error) = kill_process(pid, signal)
        && error != rustix::io::Errno::SRCH
    {
        let pid = pid.as_raw_nonzero().get();
        tracing::warn!(pid, %error, "could not signal machine process");
    }
}

/// Wait up to `limit` for `pid` to exit; whether it did.
async fn wait_gone(pid: u32, ticks: Option<u64>, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while pid_alive(pid, ticks) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
    true
}

/// `state` and `starttime` from `/proc/<pid>/stat`, if the process exists.
fn proc_stat(pid: u32) -> Option<(char, Option<u64>)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: comm may contain anything, so split after its last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // starttime is field 22 of the line, the 20th after comm.
    let ticks = fields.nth(18).and_then(|t| t.parse().ok());
    Some((state, ticks))
}

/// The start time of `pid`, to recognise it (and not a reused pid) later.
fn start_ticks(pid: u32) -> Option<u64> {
    proc_stat(pid).and_then(|(_, ticks)| ticks)
}

/// Whether `pid` is a live (not zombie) process that started at `ticks` (when known).
fn pid_alive(pid: u32, ticks: Option<u64>) -> bool {
    match proc_stat(pid) {
        None => false,
        Some(('Z' | 'X' | 'x', _)) => false,
        Some((_, now)) => match (ticks, now) {
            (Some(expected), Some(actual)) => expected == actual,
            _ => true,
        },
    }
}

/// Copy a directory tree on the blocking pool; a partial copy is removed.
async fn copy_tree_blocking(src: PathBuf, dst: PathBuf) -> Result<(), ProviderError> {
    let outcome = tokio::task::spawn_blocking(move || {
        let copied = copy_tree(&src, &dst);
        if copied.is_err() {
            let _ = fs::remove_dir_all(&dst);
        }
        copied.map_err(|e| format!("copying {} to {}: {e}", src.display(), dst.display()))
    })
    .await;
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(ProviderError::Failed(message)),
        Err(join) => Err(ProviderError::Failed(format!("copy task failed: {join}"))),
    }
}

/// Recursively copy `src` into a new directory `dst`. Symlinks are copied as links, never
/// followed, so a volume cannot pull in files from outside it.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let to = dst.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &to)?;
        } else {
            fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// Machine `id`'s row with the process columns; `None` if it was never created.
fn load_row(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<Row>> {
    load_machine_with(tx, id, ", pid, port, start_ticks", |info, row| {
        Ok(Row {
            info,
            pid: row.get(MACHINE_COLUMN_COUNT)?,
            port: row.get(MACHINE_COLUMN_COUNT + 1)?,
            start_ticks: row
                .get::<_, Option<i64>>(MACHINE_COLUMN_COUNT + 2)?
                .and_then(|t| u64::try_from(t).ok()),
        })
    })
}

impl MachineProvider for ProcessProvider {
    fn name(&self) -> &'static str {
        "process"
    }

    fn create_volume(
        &self,
        source: VolumeSource,
        name: &str,
    ) -> BoxFuture<'_, Result<VolumeId, ProviderError>> {
        let name = name.to_owned();
        Box::pin(async move {
            let root = &self.config.root;
            let (seq, id) = self
                .ledger
                .transact(|tx| ledger::reserve_volume(tx, &source))?;
            let dst = volumes_dir(root).join(&id);
            match &source {
                VolumeSource::Empty => fs::create_dir(&dst).map_err(|e| {
                    ProviderError::Failed(format!("creating {}: {e}", dst.display()))
                })?,
                VolumeSource::Volume(from) => {
                    copy_tree_blocking(volumes_dir(root).join(&from.0), dst).await?;
                }
                VolumeSource::Snapshot(from) => {
                    copy_tree_blocking(snapshots_dir(root).join(&from.0), dst).await?;
                }
            }
            self.ledger.transact(|tx| {
                tx.execute(
                    "INSERT INTO volumes (id, seq, name) VALUES (?1, ?2, ?3)",
                    params![id, seq, name],
                )?;
                Ok(Ok(()))
            })?;
            Ok(VolumeId(id))
        })
    }

    fn list_snapshots(
        &self,
        volume: &VolumeId,
    ) -> BoxFuture<'_, Result<Vec<SnapshotId>, ProviderError>> {
        let volume = volume.0.clone();
        Box::pin(async move { self.ledger.transact(|tx| ledger::snapshots_of(tx, &volume)) })
    }

    fn delete_volume(&self, volume: &VolumeId) -> BoxFuture<'_, Result<(), ProviderError>> {
        let volume = volume.0.clone();
        Box::pin(async move {
            self.ledger.transact(|tx| delete_volume_row(tx, &volume))?;
            let dir = volumes_dir(&self.config.root).join(&volume);
            let removed = tokio::task::spawn_blocking(move || fs::remove_dir_all(dir)).await;
            if !matches!(removed, Ok(Ok(()))) {
                // The volume is deleted either way; only disk space is left behind.
                tracing::warn!(%volume, ?removed, "could not remove a deleted volume's directory");
            }
            Ok(())
        })
    }

    fn create_machine(&self, spec: MachineSpec) -> BoxFuture<'_, Result<MachineId, ProviderError>> {
        Box::pin(async move { self.ledger.transact(|tx| insert_machine(tx, &spec)) })
    }

    fn start_machine(&self, machine: &MachineId) -> BoxFuture<'_, Result<(), ProviderError>> {
        let id = machine.0.clone();
        Box::pin(async move {
            let machine_lock = self.machine_lock(&id);
            let _held = machine_lock.lock().await;
            let row = self.live_row(&id)?;
            if self.is_running(&row) {
                return Ok(());
            }
            self.spawn(&row)
        })
    }

    fn stop_machine(&self, machine: &MachineId) -> BoxFuture<'_, Result<(), ProviderError>> {
        let id = machine.0.clone();
        Box::pin(async move {
            let machine_lock = self.machine_lock(&id);
            let _held = machine_lock.lock().await;
            let row = self.live_row(&id)?;
            if row.info.state != MachineState::Running {
                return Ok(());
            }
            self.terminate(&row).await;
            self.set_row_state(&id, MachineState::Stopped, None)
        })
    }

    fn restart_machine(&self, machine: &MachineId) -> BoxFuture<'_, Result<(), ProviderError>> {
        let id = machine.0.clone();
        Box::pin(async move {
            let machine_lock = self.machine_lock(&id);
            let _held = machine_lock.lock().await;
            let row = self.live_row(&id)?;
            if row.info.state == MachineState::Running {
                self.terminate(&row).await;
                self.set_row_state(&id, MachineState::Stopped, None)?;
            }
            self.spawn(&row)
        })
    }

    fn update_image(
        &self,
        machine: &MachineId,
        image: &str,
    ) -> BoxFuture<'_, Result<(), ProviderError>> {
        let id = machine.0.clone();
        let image = image.to_owned();
        Box::pin(async move {
            self.live_row(&id)?;
            self.ledger
                .transact(|tx| ledger::set_image(tx, &id, &image).map(Ok))
        })
    }

    fn machine(&self, machine: &MachineId) -> BoxFuture<'_, Result<MachineInfo, ProviderError>> {
        let id = machine.0.clone();
        Box::pin(async move { self.row(&id).map(|row| self.effective(row)) })
    }

    fn machines_on_volume(
        &self,
        volume: &VolumeId,
    ) -> BoxFuture<'_, Result<Vec<MachineId>, ProviderError>> {
        let volume = volume.0.clone();
        Box::pin(async move { self.ledger.transact(|tx| ledger::machines_on(tx, &volume)) })
    }

    fn destroy_machine(
        &self,
        machine: &MachineId,
        force: bool,
    ) -> BoxFuture<'_, Result<(), ProviderError>> {
        let id = machine.0.clone();
        Box::pin(async move {
            let machine_lock = self.machine_lock(&id);
            let _held = machine_lock.lock().await;
            let row = self.row(&id)?;
            match row.info.state {
                MachineState::Destroyed => return Ok(()),
                MachineState::Running if self.is_running(&row) => {
                    if !force {
                        return Err(ProviderError::Refused(format!(
                            "machine {id} is running; stop it or destroy with force"
                        )));
                    }
                    self.terminate(&row).await;
                }
                // Recorded running but its process is gone: reap a child that may linger.
                MachineState::Running => self.terminate(&row).await,
                MachineState::Created | MachineState::Stopped => {}
            }
            self.set_row_state(&id, MachineState::Destroyed, None)?;
            lock(&self.machine_locks).remove(&id);
            Ok(())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test
mod tests {
    use super::*;

    #[test]
    fn proc_stat_reads_this_process() {
        let pid = std::process::id();
        let (state, ticks) = proc_stat(pid).unwrap();
        assert!(matches!(state, 'R' | 'S'), "state {state}");
        let ticks = ticks.unwrap();
        assert!(pid_alive(pid, Some(ticks)));
        assert!(
            !pid_alive(pid, Some(ticks + 1)),
            "another start time is another process"
        );
        assert!(pid_alive(pid, None));
    }

    #[test]
    fn bad_configs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for command in [vec![], vec![String::new()]] {
            let config = ProcessConfig {
                root: dir.path().to_owned(),
                command,
            };
            assert!(matches!(
                ProcessProvider::open(config),
                Err(Error::InvalidConfig(_))
            ));
        }
    }

    #[test]
    fn copy_tree_keeps_symlinks_as_links() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/file"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", src.join("link")).unwrap();
        let dst = dir.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        assert_eq!(fs::read_to_string(dst.join("sub/file")).unwrap(), "x");
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("/etc/hostname")
        );
    }
}
