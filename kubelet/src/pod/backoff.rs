//! Per-key exponential back-off: CrashLoopBackOff for restarting containers and the image pull
//! back-off.
//!
//! Owns upstream's `client-go/util/flowcontrol.Backoff` as the kubelet configures it: an entry
//! starts at 10 s, doubles on every restart up to 300 s (`MaxContainerBackOff`), and is forgotten
//! when the container ran for more than 10 minutes since the last restart (the kubelet's
//! `HasExpiredFunc`: `eventTime - lastUpdate > 600s`). Pure: every call takes the current time.
//! Never decides whether a container should restart (that is `plan`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;

use super::labels::container_hash;
use super::{add_seconds, pod_name, pod_namespace, pod_uid};

/// Upstream `containerBackOffPeriod`: the first CrashLoopBackOff delay.
pub const CONTAINER_BACK_OFF_PERIOD: Duration = Duration::from_secs(10);
/// Upstream `MaxContainerBackOff`: the CrashLoopBackOff cap.
pub const MAX_CONTAINER_BACK_OFF: Duration = Duration::from_secs(300);
/// Upstream kubelet `HasExpiredFunc`: a run longer than this since the last restart resets
/// the back-off (equal to `2 × MaxContainerBackOff`, the flowcontrol default).
pub const BACK_OFF_RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    backoff: Duration,
    last_update: Timestamp,
}

/// Back-off entries by key (upstream `flowcontrol.Backoff` without jitter, as the kubelet uses
/// it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// A back-off starting at `initial`, doubling to `max`, reset after `reset_after`.
    #[must_use]
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Self {
            initial,
            max,
            reset_after,
            entries: HashMap::new(),
        }
    }

    /// The kubelet's container restart back-off (CrashLoopBackOff): 10 s doubling to 300 s,
    /// reset after a 10 minute run.
    #[must_use]
    pub fn crash_loop() -> Self {
        Self::new(
            CONTAINER_BACK_OFF_PERIOD,
            MAX_CONTAINER_BACK_OFF,
            BACK_OFF_RESET_AFTER,
        )
    }

    /// The kubelet's image pull back-off (ImagePullBackOff): the same 10 s → 300 s curve with
    /// the flowcontrol default reset (`2 × max`).
    #[must_use]
    pub fn image_pull() -> Self {
        Self::new(
            CONTAINER_BACK_OFF_PERIOD,
            MAX_CONTAINER_BACK_OFF,
            MAX_CONTAINER_BACK_OFF * 2,
        )
    }

    /// The current delay for `key` (upstream `Get`); zero when there is no entry.
    #[must_use]
    pub fn get(&self, key: &str) -> Duration {
        self.entries
            .get(key)
            .map_or(Duration::ZERO, |entry| entry.backoff)
    }

    /// Upstream `IsInBackOffSince`: is `now` still inside the delay that started at
    /// `event_time` (for containers: the last instance's `finishedAt`)?
    #[must_use]
    pub fn is_in_backoff_since(&self, key: &str, event_time: Timestamp, now: Timestamp) -> bool {
        let Some(entry) = self.live_entry(key, event_time) else {
            return false;
        };
        elapsed(event_time, now) < entry.backoff
    }

    /// Upstream `IsInBackOffSinceUpdate`: is `event_time` inside the delay that started at the
    /// entry's last update (the image pull back-off asks this with `now`)?
    #[must_use]
    pub fn is_in_backoff_since_update(&self, key: &str, event_time: Timestamp) -> bool {
        let Some(entry) = self.live_entry(key, event_time) else {
            return false;
        };
        elapsed(entry.last_update, event_time) < entry.backoff
    }

    /// When the delay that started at `event_time` ends, if `key` has an entry that still
    /// applies to `event_time`.
    #[must_use]
    pub fn ends_at(&self, key: &str, event_time: Timestamp) -> Option<Timestamp> {
        self.live_entry(key, event_time)
            .map(|entry| add_seconds(event_time, seconds(entry.backoff)))
    }

    /// Upstream `Next`: record a restart now. A new or expired entry starts at the initial
    /// delay; otherwise the delay doubles, capped at the maximum.
    pub fn next(&mut self, key: &str, event_time: Timestamp, now: Timestamp) {
        let backoff = match self.live_entry(key, event_time) {
            Some(entry) => (entry.backoff * 2).min(self.max),
            None => self.initial,
        };
        self.entries.insert(
            key.to_owned(),
            Entry {
                backoff,
                last_update: now,
            },
        );
    }

    /// Upstream `GC`: forget entries not updated for longer than the reset period.
    pub fn gc(&mut self, now: Timestamp) {
        let reset_after = self.reset_after;
        self.entries
            .retain(|_, entry| elapsed(entry.last_update, now) <= reset_after);
    }

    /// Upstream `DeleteEntry`: forget `key` (the pod was removed).
    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Forget every key that starts with `prefix` (all entries of a pod, see
    /// [`pod_key_prefix`]).
    pub fn remove_prefix(&mut self, prefix: &str) {
        self.entries.retain(|key, _| !key.starts_with(prefix));
    }

    fn live_entry(&self, key: &str, event_time: Timestamp) -> Option<Entry> {
        self.entries
            .get(key)
            .copied()
            .filter(|entry| elapsed(entry.last_update, event_time) <= self.reset_after)
    }
}

/// Upstream `getStableKey`: `name_namespace_uid_container_hash`; a changed image starts a new
/// back-off.
#[must_use]
pub fn container_key(pod: &Pod, container: &Container) -> String {
    format!(
        "{}{}_{}",
        pod_key_prefix(pod),
        container.name,
        container_hash(container)
    )
}

/// The prefix every [`container_key`] of `pod` starts with.
#[must_use]
pub fn pod_key_prefix(pod: &Pod) -> String {
    format!("{}_{}_{}_", pod_name(pod), pod_namespace(pod), pod_uid(pod))
}

/// Go's `time.Duration.String()` for the back-off in messages (`10s`, `2m40s`, `5m0s`).
#[must_use]
pub fn go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (value, unit, scale) = if nanos < 1_000 {
            (nanos, "ns", 1)
        } else if nanos < 1_000_000 {
            (nanos, "µs", 1_000)
        } else {
            (nanos, "ms", 1_000_000)
        };
        return format!("{}{unit}", decimal(value, scale));
    }
    let total_seconds = duration.as_secs();
    let hours = total_seconds / 3600;
    let minutes = (total_seconds % 3600) / 60;
    let seconds_nanos =
        u128::from(total_seconds % 60) * 1_000_000_000 + u128::from(duration.subsec_nanos());
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{}s", decimal(seconds_nanos, 1_000_000_000));
    out
}

/// `value / scale` with the fraction's trailing zeros dropped.
fn decimal(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let fraction = value % scale;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = scale.to_string().len() - 1;
    let fraction = format!("{fraction:0width$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// `to - from`, zero when negative.
fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::testing::{at, container, pod};

    /// Crash-loops a container that runs `run` seconds each time, restarting as soon as the
    /// back-off allows, and returns the delays it was held for.
    fn delays(restarts: usize, run: i64) -> Vec<u64> {
        let mut backoff = Backoff::crash_loop();
        let mut now = at(1_000);
        let mut out = Vec::new();
        for _ in 0..restarts {
            let finished = add_seconds(now, run);
            now = finished;
            // Held until the delay since `finishedAt` has passed.
            let mut waited = 0;
            while backoff.is_in_backoff_since("k", finished, now) {
                now = add_seconds(now, 1);
                waited += 1;
            }
            out.push(waited);
            backoff.next("k", finished, now);
        }
        out
    }

    #[test]
    fn crash_loop_delays_double_from_10s_to_300s() {
        assert_eq!(
            delays(9, 1),
            [0, 10, 20, 40, 80, 160, 300, 300, 300],
            "first restart is immediate, then 10s doubling, capped at 5 minutes"
        );
    }

    #[test]
    fn crash_loop_resets_after_a_run_longer_than_10_minutes() {
        let mut backoff = Backoff::crash_loop();
        let start = at(1_000);
        backoff.next("k", start, start);
        backoff.next("k", add_seconds(start, 1), add_seconds(start, 11));
        assert_eq!(backoff.get("k"), Duration::from_secs(20));

        // Ran exactly 600s since the last restart: not longer, still backing off.
        let finished = add_seconds(start, 11 + 600);
        assert!(backoff.is_in_backoff_since("k", finished, finished));
        // Ran 601s: forgiven, restarts at once and starts over at 10s.
        let finished = add_seconds(start, 11 + 601);
        assert!(!backoff.is_in_backoff_since("k", finished, finished));
        backoff.next("k", finished, finished);
        assert_eq!(backoff.get("k"), CONTAINER_BACK_OFF_PERIOD);
    }

    #[test]
    fn back_off_ends_at_event_time_plus_delay() {
        let mut backoff = Backoff::crash_loop();
        let finished = at(2_000);
        assert_eq!(backoff.ends_at("k", finished), None);
        backoff.next("k", finished, finished);
        backoff.next("k", finished, finished);
        assert_eq!(backoff.ends_at("k", finished), Some(at(2_020)));
        assert!(backoff.is_in_backoff_since("k", finished, at(2_019)));
        assert!(!backoff.is_in_backoff_since("k", finished, at(2_020)));
    }

    #[test]
    fn image_pull_back_off_is_measured_from_the_last_failure() {
        let mut backoff = Backoff::image_pull();
        backoff.next("img", at(100), at(100));
        assert!(backoff.is_in_backoff_since_update("img", at(109)));
        assert!(!backoff.is_in_backoff_since_update("img", at(110)));
        backoff.next("img", at(110), at(110));
        assert!(backoff.is_in_backoff_since_update("img", at(129)));
        assert!(!backoff.is_in_backoff_since_update("other", at(101)));
    }

    #[test]
    fn gc_forgets_entries_idle_longer_than_the_reset_period() {
        let mut backoff = Backoff::crash_loop();
        backoff.next("old", at(0), at(0));
        backoff.next("new", at(500), at(500));
        backoff.gc(at(601));
        assert_eq!(backoff.get("old"), Duration::ZERO);
        assert_eq!(backoff.get("new"), CONTAINER_BACK_OFF_PERIOD);
    }

    #[test]
    fn keys_are_per_pod_and_container_and_removable_per_pod() {
        let p = pod(vec![container("a"), container("b")]);
        let a = container_key(&p, &container("a"));
        let b = container_key(&p, &container("b"));
        assert_ne!(a, b);
        assert!(a.starts_with("web_default_uid-1_a_"));
        let mut backoff = Backoff::crash_loop();
        backoff.next(&a, at(0), at(0));
        backoff.next(&b, at(0), at(0));
        backoff.next("other_pod_x_a_1", at(0), at(0));
        backoff.remove_prefix(&pod_key_prefix(&p));
        assert_eq!(backoff.get(&a), Duration::ZERO);
        assert_eq!(backoff.get("other_pod_x_a_1"), CONTAINER_BACK_OFF_PERIOD);
    }

    #[test]
    fn durations_print_like_go() {
        for (seconds, text) in [
            (10, "10s"),
            (20, "20s"),
            (40, "40s"),
            (80, "1m20s"),
            (160, "2m40s"),
            (300, "5m0s"),
            (3600, "1h0m0s"),
            (3661, "1h1m1s"),
        ] {
            assert_eq!(go_duration(Duration::from_secs(seconds)), text);
        }
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    }
}
