//! Embedding clawdo in a host program, both ways: the bare object runtime with a class of the
//! program's own, then the claw runtime with claw instances beside that class.
//!
//! `Reminders`, the program's own class, keeps notes in its own SQL table, a setting in the KV
//! store, and uses its alarm to mark reminders due.
//!
//! 1. The bare object runtime (`clawdo::HostBuilder`): only `Reminders` is registered, no claw
//!    class and no machine provider (the data directory holds the object runtime's files only),
//!    and every class name is free (a class of the program's may be named `instance`).
//! 2. The claw runtime (`clawdo::Runtime`): it provisions a claw instance on the built-in `sim`
//!    provider, restarts it and destroys it, following its events, then runs the same
//!    `Reminders` code through `runtime.host()`, the same `Host` type the bare runtime gives.
//!
//! Run with `cargo run --example embed`; it uses temporary data directories and exits when
//! done.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clawdo::storage::rusqlite::params;
use clawdo::{AlarmInfo, Ctx, HandlerError, Host, HostBuilder, Migration, Object, Runtime};

/// A per-user list of reminders.
struct Reminders {
    /// How many reminders fired so far (mirrored in KV so it survives hibernation).
    fired: u64,
}

enum Request {
    /// Remind `text` in `after`.
    Add { text: String, after: Duration },
    /// Reminders that fired, oldest first.
    Fired,
}

enum Reply {
    Added,
    Fired(Vec<String>),
    Failed(String),
}

const MIGRATIONS: &[Migration] = &[Migration {
    name: "reminders",
    sql: "CREATE TABLE reminders (
              id    INTEGER PRIMARY KEY,
              text  TEXT NOT NULL,
              due   INTEGER NOT NULL,  -- Unix ms
              fired INTEGER            -- Unix ms, NULL until fired
          );",
}];

impl Reminders {
    fn serve(&mut self, ctx: &mut Ctx, request: Request) -> Result<Reply, HandlerError> {
        match request {
            Request::Add { text, after } => {
                let due = ctx.now() + i64::try_from(after.as_millis())?;
                // The row and the alarm commit together: if one is there, so is the other.
                ctx.transact(|tx| {
                    tx.execute(
                        "INSERT INTO reminders (text, due) VALUES (?1, ?2)",
                        params![text, due],
                    )?;
                    let next: i64 = tx.query_row(
                        "SELECT MIN(due) FROM reminders WHERE fired IS NULL",
                        [],
                        |r| r.get(0),
                    )?;
                    tx.set_alarm(next)
                })?;
                Ok(Reply::Added)
            }
            Request::Fired => {
                let conn = ctx.store().conn()?;
                let mut stmt = conn
                    .prepare("SELECT text FROM reminders WHERE fired IS NOT NULL ORDER BY due")?;
                let texts = stmt
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()?;
                Ok(Reply::Fired(texts))
            }
        }
    }
}

impl Object for Reminders {
    const CLASS: &'static str = "reminders";
    type Request = Request;
    type Response = Reply;
    type Deps = ();

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn activate(ctx: &mut Ctx, _deps: Arc<()>) -> Result<Self, HandlerError> {
        let fired = ctx.store().kv_get::<u64>("fired")?.unwrap_or(0);
        Ok(Reminders { fired })
    }

    async fn handle(&mut self, ctx: &mut Ctx, request: Request) -> Reply {
        self.serve(ctx, request)
            .unwrap_or_else(|e| Reply::Failed(e.to_string()))
    }

    async fn alarm(&mut self, ctx: &mut Ctx, _alarm: AlarmInfo) -> Result<(), HandlerError> {
        let now = ctx.now();
        let fired = ctx.transact(|tx| {
            let fired = tx.execute(
                "UPDATE reminders SET fired = ?1 WHERE fired IS NULL AND due <= ?1",
                [now],
            )?;
            let total = self.fired + fired as u64;
            tx.kv_put("fired", &total)?;
            let next: Option<i64> = tx.query_row(
                "SELECT MIN(due) FROM reminders WHERE fired IS NULL",
                [],
                |r| r.get(0),
            )?;
            if let Some(next) = next {
                tx.set_alarm(next)?;
            }
            Ok::<_, clawdo::storage::Error>(total)
        })?;
        self.fired = fired;
        Ok(())
    }
}

/// Provision, restart and destroy a claw instance through the embedding API.
async fn instances_demo(runtime: &Runtime) -> anyhow::Result<()> {
    use clawdo::actors::instance::Status;
    use clawdo::instances::{Caller, ProvisionSpec};

    let instances = runtime.instances();
    let admin = Caller::Admin;
    let view = instances
        .provision(
            &admin,
            ProvisionSpec {
                owner: "user:alice".into(),
                image_tag: Some("claw:1.0".into()),
                ..ProvisionSpec::default()
            },
        )
        .await?
        .instance;
    let id = view.id.clone();
    println!("provisioned {id}: {}", view.status.as_str());
    // Follow the instance's events until each step reaches the status it waits for.
    let (_, mut events) = instances.watch(&admin, &id).await?;
    let mut wait_for = async |status: Status| -> anyhow::Result<()> {
        if instances.get(&admin, &id).await?.status == status {
            return Ok(());
        }
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let event = events.recv().await?;
                println!("  event {} ({})", event.kind, event.status.as_str());
                if event.status == status {
                    return Ok::<_, anyhow::Error>(());
                }
            }
        })
        .await
        .context("instance did not reach the status in 10 s")?
    };
    wait_for(Status::Running).await?;
    instances.restart(&admin, &id).await?;
    wait_for(Status::Running).await?;
    instances.destroy(&admin, &id).await?;
    wait_for(Status::Destroyed).await?;
    println!("instance {id} destroyed");
    Ok(())
}

/// Add two reminders for `user` and wait (bounded) for both to fire, on any runtime's host.
async fn reminders_demo(host: &Host, user: &str) -> anyhow::Result<()> {
    let reminders = host.get::<Reminders>(user)?;
    for (text, after_ms) in [("stretch", 300), ("drink water", 150)] {
        match reminders
            .call(Request::Add {
                text: text.into(),
                after: Duration::from_millis(after_ms),
            })
            .await?
        {
            Reply::Added => println!("{user}: added {text:?} in {after_ms} ms"),
            Reply::Failed(why) => anyhow::bail!("add failed: {why}"),
            Reply::Fired(_) => anyhow::bail!("unexpected reply"),
        }
    }
    let fired = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Reply::Fired(texts)) = reminders.call(Request::Fired).await
                && texts.len() == 2
            {
                return Ok::<_, clawdo::actors::Error>(texts);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("reminders did not fire within 10 s")??;
    println!("{user}: fired in order: {fired:?}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. The bare object runtime: the program's classes only.
    let dir = tempfile::tempdir()?;
    let host = HostBuilder::new(dir.path())
        .register::<Reminders>()
        .start()
        .await?;
    reminders_demo(&host, "user:bob").await?;
    println!("bare runtime stats: {:?}", host.stats());
    host.shutdown(Duration::from_secs(5)).await?;
    anyhow::ensure!(
        !dir.path().join("providers").exists(),
        "the bare runtime opened a provider"
    );
    println!("bare runtime shut down cleanly; no provider was opened");

    // 2. The claw runtime: claw instances, and the program's class beside them. Its class names
    // (`instance`, `registry`, `fleet`, `counter`) are taken: a class of the program's named
    // like one of them is refused at `build()` with `runtime::Error::ClassNameTaken`.
    let dir = tempfile::tempdir()?;
    let runtime = Runtime::builder()
        .data_dir(dir.path())
        .register::<Reminders>()
        .build()
        .await?;
    instances_demo(&runtime).await?;
    reminders_demo(runtime.host(), "user:alice").await?;
    println!("claw runtime stats: {:?}", runtime.stats());
    runtime.shutdown(Duration::from_secs(5)).await?;
    println!("claw runtime shut down cleanly");
    Ok(())
}
