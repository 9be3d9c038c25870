//! The two embedding entry points: the bare object runtime (`clawdo::HostBuilder`) serves a
//! program's own classes, under any name, without opening a provider; the claw runtime
//! (`clawdo::Runtime`) refuses a program's class named like one of clawdo's own, plainly and
//! before anything is opened.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clawdo::actors::fleet::{FLEET_ID, Fleet};
use clawdo::runtime::{CLAWDO_CLASS_NAMES, Error};
use clawdo::{Ctx, HandlerError, HostBuilder, ManualClock, Object, Runtime, RuntimeBuilder};

const T0: i64 = 1_800_000_000_000;

/// A program's own class that keeps one note in its KV store, under the class name `NAME`
/// (`instance` below: the name of clawdo's claw instance class).
struct Note<const NAME: usize>;

/// Class names the tests give their own classes: clawdo's, then free ones.
const NAMES: [&str; 6] = [
    CLAWDO_CLASS_NAMES[0],
    CLAWDO_CLASS_NAMES[1],
    CLAWDO_CLASS_NAMES[2],
    CLAWDO_CLASS_NAMES[3],
    "notes",
    "notes",
];

/// A class of the program's named `instance`.
type MyInstance = Note<0>;

enum NoteRequest {
    Set(String),
    Get,
}

impl<const NAME: usize> Object for Note<NAME> {
    const CLASS: &'static str = NAMES[NAME];
    type Request = NoteRequest;
    type Response = Result<Option<String>, String>;
    type Deps = ();

    async fn activate(_ctx: &mut Ctx, _deps: Arc<()>) -> Result<Self, HandlerError> {
        Ok(Note)
    }

    async fn handle(&mut self, ctx: &mut Ctx, request: NoteRequest) -> Self::Response {
        match request {
            NoteRequest::Set(text) => {
                let set = ctx.transact(|tx| tx.kv_put("note", &text));
                set.map(|()| Some(text)).map_err(|e| e.to_string())
            }
            NoteRequest::Get => ctx.store().kv_get("note").map_err(|e| e.to_string()),
        }
    }
}

/// The entries of `dir` (file names), sorted; empty when it does not exist.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(read) => read
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", dir.display()),
    };
    names.sort();
    names
}

/// The claw runtime's builder over `dir`, on a manual clock at [`T0`].
fn claw_builder(dir: &Path) -> RuntimeBuilder {
    Runtime::builder()
        .data_dir(dir)
        .clock(Arc::new(ManualClock::new(T0)))
}

/// The bare runtime's builder over `dir` on `clock`, serving the program's class
/// [`MyInstance`].
fn bare_builder(dir: &Path, clock: &ManualClock) -> HostBuilder {
    HostBuilder::new(dir)
        .clock(Arc::new(clock.clone()))
        .register::<MyInstance>()
}

#[tokio::test]
async fn bare_runtime_serves_a_class_named_instance_without_opening_a_provider() {
    assert_eq!(MyInstance::CLASS, "instance");
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    {
        let host = bare_builder(dir.path(), &clock)
            .start()
            .await
            .expect("the bare runtime starts with a class named `instance`");

        let note = host.get::<MyInstance>("user:alice").unwrap();
        assert_eq!(
            note.call(NoteRequest::Set("hello".into())).await.unwrap(),
            Ok(Some("hello".into()))
        );
        assert_eq!(
            note.call(NoteRequest::Get).await.unwrap(),
            Ok(Some("hello".into()))
        );
        assert!(host.exists::<MyInstance>("user:alice").await.unwrap());
        // No claw class is registered.
        assert!(matches!(
            host.get::<Fleet>(FLEET_ID),
            Err(clawdo::actors::Error::UnknownClass("fleet"))
        ));
        host.shutdown(Duration::from_secs(5)).await.unwrap();

        assert!(
            !dir.path().join("providers").exists(),
            "the bare runtime opened a provider: {:?}",
            entries(dir.path())
        );
        assert!(entries(dir.path()).contains(&"LAYOUT".to_string()));
    }

    // The note is durable: a new bare runtime over the directory reads it back.
    let host = bare_builder(dir.path(), &clock).start().await.unwrap();
    let note = host.get::<MyInstance>("user:alice").unwrap();
    assert_eq!(
        note.call(NoteRequest::Get).await.unwrap(),
        Ok(Some("hello".into()))
    );
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Build the claw runtime over `dir` with the program's class `C`; it must fail.
async fn claw_runtime_with<C: Object<Deps = ()>>(dir: &Path) -> Error {
    claw_builder(dir)
        .register::<C>()
        .build()
        .await
        .expect_err("the claw runtime refuses the class")
}

#[tokio::test]
async fn claw_runtime_refuses_a_class_named_instance_before_opening_anything() {
    let dir = tempfile::tempdir().unwrap();
    let error = claw_runtime_with::<MyInstance>(dir.path()).await;
    assert!(
        matches!(error, Error::ClassNameTaken { name: "instance" }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("\"instance\""), "{message}");
    assert!(message.contains("clawdo's own"), "{message}");
    assert!(message.contains("bare object runtime"), "{message}");
    assert!(message.contains("clawdo::HostBuilder"), "{message}");

    assert!(!dir.path().join("providers").join("sim.db").exists());
    assert_eq!(
        entries(dir.path()),
        Vec::<String>::new(),
        "nothing is written"
    );
}

#[tokio::test]
async fn claw_runtime_refuses_every_name_of_its_own_classes() {
    let dir = tempfile::tempdir().unwrap();
    let errors = [
        claw_runtime_with::<Note<0>>(dir.path()).await,
        claw_runtime_with::<Note<1>>(dir.path()).await,
        claw_runtime_with::<Note<2>>(dir.path()).await,
        claw_runtime_with::<Note<3>>(dir.path()).await,
    ];
    let taken: Vec<&str> = errors
        .iter()
        .map(|error| match error {
            Error::ClassNameTaken { name } => *name,
            other => panic!("expected ClassNameTaken, got {other:?}"),
        })
        .collect();
    assert_eq!(taken, ["instance", "registry", "fleet", "counter"]);
    assert_eq!(taken, CLAWDO_CLASS_NAMES);
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn claw_runtime_refuses_a_repeated_class_before_opening_anything() {
    let dir = tempfile::tempdir().unwrap();
    let error = claw_builder(dir.path())
        .register::<Note<4>>()
        .register::<Note<5>>()
        .build()
        .await
        .expect_err("two classes named `notes`");
    assert!(
        matches!(
            error,
            Error::Host(clawdo::actors::Error::DuplicateClass("notes"))
        ),
        "{error:?}"
    );
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn bare_runtime_refuses_a_repeated_class() {
    let dir = tempfile::tempdir().unwrap();
    let builder = HostBuilder::new(dir.path())
        .clock(Arc::new(ManualClock::new(T0)))
        .register::<Note<4>>()
        .register::<Note<5>>();
    assert!(builder.has_class("notes"));
    assert!(matches!(
        builder.check_classes(),
        Err(clawdo::actors::Error::DuplicateClass("notes"))
    ));
    let error = builder
        .start()
        .await
        .expect_err("two classes named `notes`");
    assert!(
        matches!(error, clawdo::actors::Error::DuplicateClass("notes")),
        "{error:?}"
    );
    assert!(error.to_string().contains("\"notes\""), "{error}");
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn claw_runtime_serves_a_class_of_its_own_name_beside_the_claw_classes() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = claw_builder(dir.path())
        .register::<Note<4>>()
        .build()
        .await
        .expect("a free class name is accepted");
    let note = runtime.host().get::<Note<4>>("user:bob").unwrap();
    assert_eq!(
        note.call(NoteRequest::Set("hi".into())).await.unwrap(),
        Ok(Some("hi".into()))
    );
    assert!(runtime.host().get::<Fleet>(FLEET_ID).is_ok());
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(dir.path().join("providers").join("sim.db").exists());
}
