//! One cancellation signal that reaches every task (the mini-redis pattern): the owner
//! triggers it once, every task holds a [`Shutdown`] and selects on [`Shutdown::wait`].

use tokio::sync::watch;

/// Held by the owner; dropping it also triggers shutdown.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Held by tasks; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger(sender), Shutdown(receiver))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once shutdown was triggered (or its trigger dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// SIGTERM and SIGINT, how a daemon is told to stop, caught from the moment `listen` is
/// called: a daemon listens before it starts anything, so that a stop asked for while it
/// starts is a clean stop, not the signal's default (death without flushing).
#[derive(Debug)]
pub struct Termination {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Termination {
    /// Starts catching the signals (inside a Tokio runtime).
    pub fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes once one of the signals came (before or after this call).
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Completes on SIGTERM or SIGINT (caught from this call on).
pub async fn terminated() -> std::io::Result<()> {
    Termination::listen()?.wait().await;
    Ok(())
}
