//! The daemon's side of the systemd service protocol (sd_notify(3)), shared by the agent
//! and the collector: [`ready`] once the service works, [`stopping`] when it starts to
//! shut down, and a [`Watchdog`] that keeps the manager's watchdog fed only while a
//! liveness check of the caller passes, so that a wedged service is restarted instead of
//! pinged forever.
//!
//! Everything here is a no-op outside systemd (no `NOTIFY_SOCKET`), and the watchdog also
//! when the unit sets no `WatchdogSec=` (no `WATCHDOG_USEC` for this process). The
//! messages go through the `sd-notify` crate: one datagram to the manager's socket.

use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use sd_notify::NotifyState;
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The longest a liveness check may take before it counts as failed.
const MAX_CHECK_TIME: Duration = Duration::from_secs(10);

/// Whether a service manager listens for our notifications.
fn supervised() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(state: NotifyState<'_>) -> std::io::Result<()> {
    sd_notify::notify(&[state])
}

/// Tells the service manager that the service is up (`READY=1`): with `Type=notify`, units
/// ordered after this one start only now.
pub fn ready() {
    if supervised() {
        match send(NotifyState::Ready) {
            Ok(()) => debug!("told the service manager: ready"),
            Err(error) => warn!(%error, "cannot tell the service manager that we are ready"),
        }
    }
}

/// Tells the service manager that the service is shutting down (`STOPPING=1`).
pub fn stopping() {
    if supervised()
        && let Err(error) = send(NotifyState::Stopping)
    {
        warn!(%error, "cannot tell the service manager that we are stopping");
    }
}

/// The watchdog period the service manager expects of this process: `WatchdogSec=` of the
/// unit, when a manager listens and the watchdog is meant for this very process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|interval| !interval.is_zero())
        .filter(|_| supervised())
}

/// How often to ping for a watchdog `interval` (half of it, as sd_watchdog_enabled(3)
/// advises), and how long a liveness check may take (half of that, at most
/// [`MAX_CHECK_TIME`]), so that a slow check still leaves time for the next ping.
fn ping_schedule(interval: Duration) -> (Duration, Duration) {
    let period = (interval / 2).max(Duration::from_millis(1));
    (period, (period / 2).min(MAX_CHECK_TIME))
}

/// A task that sends `WATCHDOG=1` every half watchdog interval while the caller's
/// liveness check passes. A check that fails or does not answer in time skips the ping
/// (and says why in the log): after two such rounds in a row, the manager's interval
/// has passed without a ping and it kills the service, which `Restart=on-failure`
/// starts again.
#[derive(Debug)]
pub struct Watchdog {
    trigger: ShutdownTrigger,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts feeding the watchdog (after [`ready`]: the manager arms it then), with
    /// `alive` as the liveness check; nothing runs when no watchdog is asked for. Call it
    /// within a Tokio runtime: the pings come from a task of their own.
    pub fn start<C, F, E>(alive: C) -> Self
    where
        C: FnMut() -> F + Send + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + 'static,
    {
        let (trigger, shutdown) = shutdown::channel();
        let task = watchdog_interval().map(|interval| {
            info!(
                interval_ms = interval.as_millis(),
                "feeding the systemd watchdog"
            );
            tokio::spawn(feed(
                interval,
                alive,
                || send(NotifyState::Watchdog),
                shutdown,
            ))
        });
        Self { trigger, task }
    }

    /// Stops the pings (at the start of a shutdown, which `TimeoutStopSec=` bounds).
    pub async fn stop(mut self) {
        self.trigger.trigger();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The result of one round of the watchdog.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Round {
    /// The check passed and the ping went out.
    Pinged,
    /// The check failed: no ping.
    Failed(String),
    /// The check did not answer in time: no ping.
    TimedOut,
    /// The check passed but the ping could not be sent.
    NotSent(String),
}

/// One round: runs the check with a time limit, and pings only if it passed.
async fn round<F, E>(
    check: F,
    limit: Duration,
    ping: &mut impl FnMut() -> std::io::Result<()>,
) -> Round
where
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    match tokio::time::timeout(limit, check).await {
        Err(_) => Round::TimedOut,
        Ok(Err(reason)) => Round::Failed(reason.to_string()),
        Ok(Ok(())) => match ping() {
            Ok(()) => Round::Pinged,
            Err(error) => Round::NotSent(error.to_string()),
        },
    }
}

/// The watchdog loop: a round every ping period until `shutdown`; logs each round that
/// skips its ping (with the reason) and the first ping after them.
async fn feed<C, F, E>(
    interval: Duration,
    mut alive: C,
    mut ping: impl FnMut() -> std::io::Result<()>,
    mut shutdown: Shutdown,
) where
    C: FnMut() -> F,
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    let (period, limit) = ping_schedule(interval);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        let outcome = tokio::select! {
            outcome = round(alive(), limit, &mut ping) => outcome,
            () = shutdown.wait() => return,
        };
        match outcome {
            Round::Pinged => {
                if !healthy {
                    info!("liveness check passes again: feeding the systemd watchdog");
                }
                healthy = true;
            }
            Round::Failed(reason) => {
                warn!(%reason, "liveness check failed: not feeding the systemd watchdog");
                healthy = false;
            }
            Round::TimedOut => {
                warn!(
                    limit_ms = limit.as_millis(),
                    "liveness check did not answer: not feeding the systemd watchdog"
                );
                healthy = false;
            }
            Round::NotSent(error) => {
                if healthy {
                    warn!(%error, "cannot ping the systemd watchdog");
                }
                healthy = false;
            }
        }
    }
}

/// When a loop last went round: the loop marks it, a liveness check reads it from
/// another task. Cheap to clone and to mark (one atomic store).
#[derive(Debug, Clone)]
pub struct Progress(Arc<ProgressInner>);

#[derive(Debug)]
struct ProgressInner {
    origin: Instant,
    /// Milliseconds after `origin` of the last mark.
    last_ms: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Marked now.
    pub fn new() -> Self {
        Self::new_at(Instant::now())
    }

    pub fn new_at(now: Instant) -> Self {
        Self(Arc::new(ProgressInner {
            origin: now,
            last_ms: AtomicU64::new(0),
        }))
    }

    /// The loop went round now.
    pub fn mark(&self) {
        self.mark_at(Instant::now());
    }

    pub fn mark_at(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.0.origin).as_millis())
            .unwrap_or(u64::MAX);
        self.0.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long since the last mark.
    pub fn idle(&self) -> Duration {
        self.idle_at(Instant::now())
    }

    pub fn idle_at(&self, now: Instant) -> Duration {
        let last = self.0.origin + Duration::from_millis(self.0.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    }

    #[test]
    fn the_watchdog_is_pinged_at_half_its_interval_and_checks_get_half_of_that() {
        assert_eq!(
            ping_schedule(Duration::from_secs(2)),
            (Duration::from_secs(1), Duration::from_millis(500))
        );
        assert_eq!(
            ping_schedule(Duration::from_secs(60)),
            (Duration::from_secs(30), MAX_CHECK_TIME)
        );
        assert!(ping_schedule(Duration::from_micros(1)).0 > Duration::ZERO);
    }

    #[test]
    fn a_round_pings_only_when_the_liveness_check_passes() {
        runtime().block_on(async {
            let mut pings = 0;
            let mut ping = || {
                pings += 1;
                Ok(())
            };
            let limit = Duration::from_secs(5);
            let passed = async { Ok::<(), String>(()) };
            assert_eq!(round(passed, limit, &mut ping).await, Round::Pinged);
            let failed = async { Err::<(), _>("writer thread gone") };
            assert_eq!(
                round(failed, limit, &mut ping).await,
                Round::Failed("writer thread gone".into())
            );
            assert_eq!(pings, 1);
        });
    }

    #[test]
    fn a_check_that_never_answers_skips_the_ping() {
        runtime().block_on(async {
            let mut pinged = false;
            let mut ping = || {
                pinged = true;
                Ok(())
            };
            let wedged = std::future::pending::<Result<(), String>>();
            let outcome = round(wedged, Duration::from_millis(1), &mut ping).await;
            assert_eq!(outcome, Round::TimedOut);
            assert!(!pinged);
        });
    }

    #[test]
    fn a_ping_that_cannot_be_sent_is_reported() {
        runtime().block_on(async {
            let mut ping = || Err(io::Error::from(io::ErrorKind::ConnectionRefused));
            let outcome = round(
                async { Ok::<(), String>(()) },
                Duration::from_secs(5),
                &mut ping,
            )
            .await;
            assert!(matches!(outcome, Round::NotSent(_)), "{outcome:?}");
        });
    }

    #[test]
    fn progress_tells_how_long_a_loop_has_been_idle() {
        let start = Instant::now();
        let progress = Progress::new_at(start);
        assert_eq!(progress.idle_at(start), Duration::ZERO);
        assert_eq!(
            progress.idle_at(start + Duration::from_secs(7)),
            Duration::from_secs(7)
        );
        let reader = progress.clone();
        progress.mark_at(start + Duration::from_secs(5));
        assert_eq!(
            reader.idle_at(start + Duration::from_secs(7)),
            Duration::from_secs(2)
        );
        // A mark from a late clock reading never moves it back.
        progress.mark_at(start + Duration::from_secs(1));
        assert_eq!(
            reader.idle_at(start + Duration::from_secs(7)),
            Duration::from_secs(2)
        );
    }
}
