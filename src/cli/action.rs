//! `clawdo action …`: schedule, read, list, cancel, run now and watch scheduled admin actions
//! on a running server (admin token needed). `watch` shows a progress bar of the targets by
//! status (on a terminal) until the action is done, then prints the action.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use clawdo::actors::claw::time::{self, format_rfc3339};
use clawdo::client;
use clawdo::client::actions::{self as ac, ActionClient};
use clawdo::grpc::pb;
use indicatif::{ProgressBar, ProgressStyle};

use super::ConnectionArgs;

/// `clawdo action`: the connection flags and one action command.
#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Where and how to connect.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: ActionCommand,
}

/// The `clawdo action` commands.
#[derive(Debug, Subcommand)]
pub enum ActionCommand {
    /// Schedule a restart or a version change over instances.
    Schedule(ScheduleArgs),
    /// Show one action and every target.
    Get {
        /// Action id.
        id: i64,
    },
    /// List actions, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Cancel an action (its pending targets), or one target with `--target`.
    Cancel {
        /// Action id.
        id: i64,
        /// Only this target.
        #[arg(long)]
        target: Option<i64>,
    },
    /// Make an action's pending targets (or one target) due now; refused while every fleet
    /// slot is taken unless `--force` (audited).
    RunNow {
        /// Action id.
        id: i64,
        /// Only this target.
        #[arg(long)]
        target: Option<i64>,
        /// Bypass the fleet cap (recorded in the audit table).
        #[arg(long)]
        force: bool,
        /// Who asks, for the audit row.
        #[arg(long, default_value = "")]
        requested_by: String,
    },
    /// Follow an action until every target is done, with a progress bar.
    Watch {
        /// Action id.
        id: i64,
        /// Milliseconds between polls.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
        interval_ms: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 86_400)]
        timeout_secs: u64,
    },
}

/// Flags of `clawdo action schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Restart the instances on their current image.
    #[arg(long, conflicts_with = "version", required_unless_present = "version")]
    pub restart: bool,
    /// Move the instances to this image tag.
    #[arg(long, value_name = "TAG")]
    pub version: Option<String>,
    /// With `--version`: also pin the image.
    #[arg(long, requires = "version", conflicts_with = "unpin")]
    pub pin: bool,
    /// With `--version`: also remove the pin (pinned instances are skipped otherwise).
    #[arg(long, requires = "version")]
    pub unpin: bool,
    /// When: an RFC 3339 time, `now`, or `+<duration>` from now (`+90s`, `+10m`, `+1h30m`,
    /// `+1d`) [default: now].
    #[arg(long, default_value = "now")]
    pub at: String,
    /// Lease of each slot, seconds [default: the server's fleet.lease].
    #[arg(long)]
    pub lease_secs: Option<u32>,
    /// A stage: `NAME:COUNT` or `NAME:COUNT@WHEN` (repeat, in order; left-over targets join
    /// the last stage).
    #[arg(long = "stage", value_name = "NAME:COUNT[@WHEN]")]
    pub stages: Vec<String>,
    /// Read more instance ids from this file (one per line, `#` comments).
    #[arg(long)]
    pub instances_file: Option<PathBuf>,
    /// Instance ids.
    pub instances: Vec<String>,
}

/// What the user typed for "when", as the `run_at` text of a request, relative to `now_ms`
/// ([`time::resolve_when`]):
///
/// - `now` (or nothing): empty, so the server's clock decides (a stage follows the previous).
/// - `+<duration>`, e.g. `+90s`, `+10m`, `+2h`, `+1h30m`, `+1d`: now plus that, in RFC 3339.
/// - anything else is sent as typed: the server reads it as RFC 3339 (the grammar of
///   [`time::parse_rfc3339`]) and answers `INVALID_ARGUMENT` on `run_at` if it is not one.
pub fn resolve_when(text: &str, now_ms: i64) -> Result<String, client::Error> {
    let text = text.trim();
    if !text.is_empty() && text != "now" && !text.starts_with('+') {
        return Ok(text.to_owned());
    }
    let at = time::resolve_when(text, now_ms).map_err(|e| {
        client::Error::Usage(format!(
            "time: {e} (use now, +<duration> such as +90s, +1h30m, +1d, or RFC 3339)"
        ))
    })?;
    Ok(at.map(format_rfc3339).unwrap_or_default())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ScheduleArgs {
    /// The request these flags describe.
    pub fn request(&self, now_ms: i64) -> Result<pb::ScheduleActionRequest, client::Error> {
        let mut instance_ids = self.instances.clone();
        if let Some(path) = &self.instances_file {
            let text = std::fs::read_to_string(path)?;
            instance_ids.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        let stages = self
            .stages
            .iter()
            .map(|stage| {
                let bad =
                    || client::Error::Usage(format!("stage {stage:?}: use NAME:COUNT[@WHEN]"));
                let (name, rest) = stage.split_once(':').ok_or_else(bad)?;
                let (count, when) = match rest.split_once('@') {
                    Some((count, when)) => (count, resolve_when(when, now_ms)?),
                    None => (rest, String::new()),
                };
                Ok(pb::StageSpec {
                    name: name.to_owned(),
                    count: count.parse().map_err(|_| bad())?,
                    run_at: when,
                })
            })
            .collect::<Result<Vec<_>, client::Error>>()?;
        let kind = if self.restart {
            pb::ActionKind::ScheduledRestart
        } else {
            pb::ActionKind::VersionChange
        };
        Ok(pb::ScheduleActionRequest {
            kind: kind.into(),
            image_tag: self.version.clone(),
            pin: match (self.pin, self.unpin) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            run_at: resolve_when(&self.at, now_ms)?,
            instance_ids,
            stages,
            lease_secs: self.lease_secs,
        })
    }
}

impl ActionArgs {
    /// Connect, run the command, print its result to `out`.
    pub async fn run(self, out: &mut impl Write) -> Result<(), client::Error> {
        let channel = client::connect(&self.connection.server).await?;
        let mut client = ac::action_client(channel, self.connection.token.as_deref())?;
        run_action_command(&mut client, self.command, self.connection.json, out).await
    }
}

fn print_action(
    out: &mut impl Write,
    json: bool,
    action: &pb::Action,
) -> Result<(), client::Error> {
    if json {
        writeln!(out, "{}", ac::action_json(action))?;
    } else {
        write!(out, "{}", ac::render_action(action))?;
    }
    Ok(())
}

fn print_detail(
    out: &mut impl Write,
    json: bool,
    detail: &pb::ActionDetail,
) -> Result<(), client::Error> {
    let Some(action) = &detail.action else {
        return Ok(());
    };
    if json {
        let mut value = ac::action_json(action);
        value["targets"] = detail.targets.iter().map(ac::target_json).collect();
        writeln!(out, "{value}")?;
    } else {
        write!(out, "{}", ac::render_action(action))?;
        for stage in &detail.stages {
            writeln!(
                out,
                "stage {} {:<12} {} {}",
                stage.index,
                stage.name,
                format_rfc3339(stage.run_at_ms),
                stage.status
            )?;
        }
        write!(out, "{}", ac::render_targets(&detail.targets))?;
    }
    Ok(())
}

async fn run_action_command(
    client: &mut ActionClient,
    command: ActionCommand,
    json: bool,
    out: &mut impl Write,
) -> Result<(), client::Error> {
    match command {
        ActionCommand::Schedule(args) => {
            let request = args.request(now_ms())?;
            let action = client.schedule(request).await?.into_inner();
            print_action(out, json, &action)
        }
        ActionCommand::Get { id } => {
            let detail = client
                .get(pb::GetActionRequest { action_id: id })
                .await?
                .into_inner();
            print_detail(out, json, &detail)
        }
        ActionCommand::List { limit } => {
            let page = client
                .list(pb::ListActionsRequest {
                    before_id: 0,
                    page_size: limit,
                })
                .await?
                .into_inner();
            if json {
                for action in &page.actions {
                    writeln!(out, "{}", ac::action_json(action))?;
                }
            } else {
                write!(out, "{}", ac::render_action_table(&page.actions))?;
            }
            Ok(())
        }
        ActionCommand::Cancel { id, target } => match target {
            Some(target_id) => {
                let target = client
                    .cancel_target(pb::CancelTargetRequest {
                        action_id: id,
                        target_id,
                    })
                    .await?
                    .into_inner();
                if json {
                    writeln!(out, "{}", ac::target_json(&target))?;
                } else {
                    write!(out, "{}", ac::render_targets(&[target]))?;
                }
                Ok(())
            }
            None => {
                let action = client
                    .cancel(pb::CancelActionRequest { action_id: id })
                    .await?
                    .into_inner();
                print_action(out, json, &action)
            }
        },
        ActionCommand::RunNow {
            id,
            target,
            force,
            requested_by,
        } => {
            let done = client
                .run_now(pb::RunNowRequest {
                    action_id: id,
                    target_id: target,
                    force,
                    requested_by,
                })
                .await?
                .into_inner();
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"targets": done.targets, "forced": done.forced})
                )?;
            } else {
                writeln!(
                    out,
                    "{} target(s) due now{}",
                    done.targets,
                    if done.forced {
                        " (cap bypassed, audited)"
                    } else {
                        ""
                    }
                )?;
            }
            Ok(())
        }
        ActionCommand::Watch {
            id,
            interval_ms,
            timeout_secs,
        } => {
            let bar = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} action {prefix} [{bar:40}] {pos}/{len} terminal {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(id.to_string());
            let detail = ac::watch_action(
                client,
                id,
                Duration::from_millis(interval_ms),
                Duration::from_secs(timeout_secs),
                |detail| {
                    if let Some(action) = &detail.action {
                        let c = action.counts.unwrap_or_default();
                        bar.set_length(c.total);
                        bar.set_position(ac::terminal(&c));
                        bar.set_message(format!(
                            "{}: {} applied, {} skipped, {} failed, {} cancelled, {} running, {} pending",
                            ac::action_status_name(action.status()),
                            c.applied,
                            c.skipped,
                            c.failed,
                            c.cancelled,
                            c.running,
                            c.pending
                        ));
                    }
                },
            )
            .await;
            match detail {
                Ok(detail) => {
                    bar.finish();
                    if let Some(action) = &detail.action {
                        print_action(out, json, action)?;
                    }
                    Ok(())
                }
                Err(error) => {
                    bar.abandon();
                    Err(error)
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn relative_times_resolve_to_rfc3339() {
        assert_eq!(resolve_when("now", 0).expect("valid"), "");
        assert_eq!(
            resolve_when("+90s", 0).expect("valid"),
            "1970-01-01T00:01:30.000Z"
        );
        assert_eq!(
            resolve_when("+2h", 0).expect("valid"),
            "1970-01-01T02:00:00.000Z"
        );
        assert_eq!(
            resolve_when("2026-05-01T02:00:00Z", 0).expect("valid"),
            "2026-05-01T02:00:00Z"
        );
        // Durations of any unit and mix (`+5d` was refused by the old hand-written parser).
        for (relative, want) in [
            ("+1h30m", "1970-01-01T01:30:00.000Z"),
            ("+1d", "1970-01-02T00:00:00.000Z"),
            ("+5d", "1970-01-06T00:00:00.000Z"),
            ("+1d2h", "1970-01-02T02:00:00.000Z"),
            ("+250ms", "1970-01-01T00:00:00.250Z"),
            (" +10m ", "1970-01-01T00:10:00.000Z"),
        ] {
            assert_eq!(
                resolve_when(relative, 0).expect("valid"),
                want,
                "{relative}"
            );
        }
        assert_eq!(resolve_when("", 0).expect("valid"), "");
        // Absolute times go as typed; the server parses them (and refuses this one).
        assert_eq!(resolve_when(" soon ", 0).expect("sent as typed"), "soon");
        assert_eq!(
            resolve_when("+1d", 1_714_564_800_123).expect("valid"),
            "2024-05-02T12:00:00.123Z"
        );
        for bad in ["+", "+xm", "+5", "+-5s", "+1mo", "+99999999999999999h"] {
            assert!(resolve_when(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn stages_and_kinds_build_the_request() {
        let args = ScheduleArgs {
            restart: false,
            version: Some("claw:2".into()),
            pin: false,
            unpin: true,
            at: "+1m".into(),
            lease_secs: Some(60),
            stages: vec!["canary:1".into(), "rest:2@+2m".into()],
            instances_file: None,
            instances: vec!["a".into(), "b".into(), "c".into()],
        };
        let request = args.request(0).expect("valid");
        assert_eq!(request.kind(), pb::ActionKind::VersionChange);
        assert_eq!(request.pin, Some(false));
        assert_eq!(request.run_at, "1970-01-01T00:01:00.000Z");
        assert_eq!(request.stages.len(), 2);
        assert_eq!(request.stages[1].run_at, "1970-01-01T00:02:00.000Z");
        let bad = ScheduleArgs {
            stages: vec!["nocount".into()],
            ..args
        };
        assert!(bad.request(0).is_err());
    }
}
