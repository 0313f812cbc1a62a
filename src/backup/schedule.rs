//! `[backup] schedule`: runs backups at their times, keeps `keep`, and
//! pages through the alert stage when one fails, is missed (the collector
//! was down at its time, or the previous run was still going) or was cut
//! short by a crash. `DATA_DIR/backup/state.json` remembers the last slot
//! started and whether its run finished, across restarts.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Backups, Dest};
use crate::time::{now_nanos, NANOS_PER_SEC};

const DAY: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Every day at this second of the day, UTC.
    Daily { at: i64 },
    /// Every `secs`, aligned on multiples of it since the epoch.
    Every { secs: i64 },
}

impl Schedule {
    /// `daily 02:00` (or `daily at 02:00`, UTC), `hourly`, `every 6h`.
    pub fn parse(text: &str) -> Result<Schedule> {
        let t = text.trim();
        if t == "hourly" {
            return Ok(Schedule::Every { secs: 3600 });
        }
        if t == "daily" {
            return Ok(Schedule::Daily { at: 0 });
        }
        if let Some(rest) = t.strip_prefix("daily ") {
            let hm = rest.trim().trim_start_matches("at ").trim();
            let (h, m) = hm.split_once(':').unwrap_or((hm, "0"));
            let (Ok(h), Ok(m)) = (h.parse::<i64>(), m.parse::<i64>()) else {
                bail!("backup schedule {text:?}: expected `daily HH:MM` (UTC)");
            };
            if !(0..24).contains(&h) || !(0..60).contains(&m) {
                bail!("backup schedule {text:?}: no such time of day");
            }
            return Ok(Schedule::Daily {
                at: h * 3600 + m * 60,
            });
        }
        if let Some(rest) = t.strip_prefix("every ") {
            let nanos = crate::time::parse_duration(rest.trim())
                .with_context(|| format!("backup schedule {text:?}"))?;
            let secs = nanos / NANOS_PER_SEC;
            if secs < 1 {
                bail!("backup schedule {text:?}: at least every 1s");
            }
            return Ok(Schedule::Every { secs });
        }
        bail!("backup schedule {text:?}: expected `daily HH:MM`, `hourly` or `every DURATION`")
    }

    /// The newest scheduled time at or before `now` (unix seconds).
    pub fn slot_at_or_before(&self, now: i64) -> i64 {
        match *self {
            Schedule::Every { secs } => now - now.rem_euclid(secs),
            Schedule::Daily { at } => {
                let today = now - now.rem_euclid(DAY) + at;
                if today <= now {
                    today
                } else {
                    today - DAY
                }
            }
        }
    }

    pub fn period(&self) -> i64 {
        match *self {
            Schedule::Every { secs } => secs,
            Schedule::Daily { .. } => DAY,
        }
    }

    pub fn next_after(&self, now: i64) -> i64 {
        self.slot_at_or_before(now) + self.period()
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct State {
    /// The last slot a run was started for (unix seconds).
    last_slot: Option<i64>,
    /// Set while a run goes on: still set at start means a crash cut it.
    running_since: Option<i64>,
}

struct StateFile {
    path: PathBuf,
    state: Mutex<State>,
}

impl StateFile {
    fn load(path: PathBuf) -> Result<StateFile> {
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "unreadable backup schedule state: starting afresh");
                State::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(StateFile {
            path,
            state: Mutex::new(state),
        })
    }

    fn get(&self) -> State {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        change(&mut state);
        let written = serde_json::to_vec(&*state)
            .map_err(anyhow::Error::from)
            .and_then(|json| {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                crate::fsutil::write_atomic(&self.path, &json, 0o600)
            });
        if let Err(e) = written {
            tracing::warn!(error = %format!("{e:#}"), "cannot record the backup schedule's state; a restart may miss or repeat a page");
        }
    }
}

/// Checks `[backup]` (bad values are bad input, exit 2) and starts the
/// schedule when `to` and `schedule` are set.
pub fn start(backups: &Arc<Backups>) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let config = &backups.config;
    let usage = |m: String| crate::error::usage(m);
    let (to, schedule) = match (&config.to, &config.schedule) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(usage("[backup] to is set without a schedule".into())),
        (None, Some(_)) => return Err(usage("[backup] schedule is set without `to`".into())),
        (Some(to), Some(schedule)) => (to, schedule),
    };
    let dest = Dest::parse(to).map_err(|e| usage(format!("[backup] to: {e:#}")))?;
    let schedule = Schedule::parse(schedule).map_err(|e| usage(format!("[backup] {e:#}")))?;
    if config.keep == Some(0) {
        return Err(usage("[backup] keep must be at least 1".into()));
    }
    let state = Arc::new(StateFile::load(
        backups.data_dir.join("backup").join("state.json"),
    )?);
    let backups = Arc::clone(backups);
    tracing::info!(to = %dest.describe(), ?schedule, keep = ?backups.config.keep, "backup schedule");
    Ok(Some(tokio::spawn(run_schedule(
        backups, dest, schedule, state,
    ))))
}

fn unix_now() -> i64 {
    now_nanos() / NANOS_PER_SEC
}

async fn run_schedule(
    backups: Arc<Backups>,
    dest: Dest,
    schedule: Schedule,
    state: Arc<StateFile>,
) {
    let now = unix_now();
    let previous = schedule.slot_at_or_before(now);
    let known = state.get();
    let catch_up = match (known.running_since, known.last_slot) {
        (Some(since), _) => {
            backups.page(
                "failed",
                &format!("backup to {} was interrupted", dest.describe()),
                &format!(
                    "the backup started at {} did not finish: the collector stopped during it; no manifest was written, so the destination holds no partial backup; running it again now",
                    crate::time::format_rfc3339(since * NANOS_PER_SEC)
                ),
            );
            backups.metrics.backup.runs_failed.inc();
            true
        }
        (None, Some(last)) if last < previous => {
            backups.metrics.backup.missed.inc();
            backups.page(
                "missed",
                &format!("scheduled backup to {} was missed", dest.describe()),
                &format!(
                    "no backup ran at {} (the collector was not running); running one now",
                    crate::time::format_rfc3339(previous * NANOS_PER_SEC)
                ),
            );
            true
        }
        (None, None) => {
            // A new schedule: it starts with the next slot.
            state.update(|s| s.last_slot = Some(previous));
            false
        }
        _ => false,
    };
    if catch_up {
        launch(&backups, &dest, &state, previous);
    }
    loop {
        let now = unix_now();
        let next = schedule.next_after(now);
        if let Ok(mut last) = backups.last.lock() {
            last.next_unix = Some(next);
        }
        tokio::time::sleep(Duration::from_secs((next - now).max(1) as u64)).await;
        if backups.metrics.backup.running.get() != 0 {
            backups.metrics.backup.missed.inc();
            backups.page(
                "missed",
                &format!("scheduled backup to {} was missed", dest.describe()),
                &format!(
                    "the backup due at {} did not start: the previous one is still running",
                    crate::time::format_rfc3339(next * NANOS_PER_SEC)
                ),
            );
            continue;
        }
        launch(&backups, &dest, &state, next);
    }
}

fn launch(backups: &Arc<Backups>, dest: &Dest, state: &Arc<StateFile>, slot: i64) {
    state.update(|s| {
        s.last_slot = Some(slot);
        s.running_since = Some(unix_now());
    });
    // Shown as running from now on, so the next slot sees it even before
    // the run takes the lock.
    backups.metrics.backup.running.set(1);
    let (backups, dest, state) = (Arc::clone(backups), dest.clone(), Arc::clone(state));
    tokio::spawn(async move {
        let keep = backups.config.keep;
        let _ = backups.run(&dest, keep, true, None).await;
        state.update(|s| s.running_since = None);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_find_their_slots() {
        let daily = Schedule::parse("daily 02:00").expect("daily");
        assert_eq!(daily, Schedule::Daily { at: 7200 });
        assert_eq!(
            Schedule::parse("daily at 2:30").expect("at"),
            Schedule::Daily { at: 9000 }
        );
        // 2026-01-05T01:00:00Z: the last 02:00 was the day before.
        let t = 1_767_574_800;
        assert_eq!(daily.slot_at_or_before(t), t + 3600 - DAY);
        assert_eq!(daily.next_after(t), t + 3600);
        let every = Schedule::parse("every 6h").expect("every");
        assert_eq!(every, Schedule::Every { secs: 21_600 });
        assert_eq!(every.slot_at_or_before(21_601), 21_600);
        assert_eq!(Schedule::parse("hourly").expect("hourly").period(), 3600);
        for bad in ["weekly", "daily 25:00", "every 0s", "every soon", "daily x"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }
}
