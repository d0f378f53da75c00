//! The card log's queue: a hook answer never waits for the database.
//!
//! Handlers hand each answer's cards to [`CardLog::record`], which only tries to put them on a bounded channel
//! and returns at once. One writer task ([`CardLog::start`]) wakes every [`FLUSH_EVERY`], takes everything
//! queued and writes it in batches of up to [`BATCH`] cards, one transaction each. Two things make logging
//! nearly free: one commit per batch, not per card; and a writer that sleeps on a timer rather than waiting on
//! the channel, so that a hook call's `try_send` never wakes another thread (waking the writer for every card
//! cost a fifth of the hook throughput in `scripts/store-cost`, most of it in futex system calls).
//!
//! When the store is slow or down the queue fills; cards that find it full are dropped and counted
//! (`cds_card_log_total{outcome="queue_full"}`), and a batch the store refuses is retried with back-off a few
//! times and then dropped and counted (`outcome="store_error"`), each with a warning at most every ten seconds.
//! Losing log rows is the designed failure: analytics undercount during an outage, while clinicians keep getting
//! answers at full speed. At shutdown the writer stops taking new cards and writes what is queued, within a
//! deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{CardRecord, Store};
use crate::logsafe::Occasional;
use crate::ops::metrics as ops;

/// Cards written per transaction, at most.
pub(crate) const BATCH: usize = 1000;
/// How often the writer takes what is queued: a card reaches the store within about this long.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Cards queued by default: minutes of a busy hospital's traffic, a few MiB at most.
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;
/// Attempts per batch before it is dropped, and the wait before the first retry (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// The sending side, shared by every handler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CardLog {
    queue: mpsc::Sender<CardRecord>,
    full: Arc<Mutex<Occasional>>,
    /// Cards dropped since start, for any reason (for `/readyz` and tests; the metric has them by reason).
    dropped: Arc<AtomicU64>,
}

/// The writer task; [`CardLogWriter::finish`] flushes and stops it.
#[derive(Debug)]
pub struct CardLogWriter {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl CardLog {
    /// Starts the writer on the current runtime, with room for `capacity` queued cards.
    pub fn start(store: Store, capacity: usize) -> (CardLog, CardLogWriter) {
        let (queue, cards) = mpsc::channel(capacity.max(1));
        let (stop, stopping) = watch::channel(false);
        let dropped = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(write(store, cards, stopping, dropped.clone()));
        let log = CardLog {
            queue,
            full: Default::default(),
            dropped,
        };
        (log, CardLogWriter { stop, task })
    }

    /// Queues an answer's cards; never waits. Cards that do not fit are dropped and counted.
    pub fn record(&self, cards: Vec<CardRecord>) {
        let mut dropped = 0u64;
        for card in cards {
            match self.queue.try_send(card) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) => dropped += 1,
            }
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            metrics::counter!(ops::CARD_LOG, "outcome" => "queue_full").increment(dropped);
            self.full.lock().unwrap_or_else(|p| p.into_inner()).warn(|times| {
                warn!(
                    dropped,
                    times, "card log queue full: cards not logged (the store is slow or down)"
                )
            });
        }
    }

    /// Cards dropped since start: the queue was full, or the store refused them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Cards waiting to be written.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

impl CardLogWriter {
    /// Stops taking cards, writes what is queued, and waits up to `deadline` for that; what is left then is
    /// dropped (and counted).
    pub async fn finish(self, deadline: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            warn!("card log: queued cards not written before the shutdown deadline");
        }
    }
}

async fn write(
    store: Store,
    mut cards: mpsc::Receiver<CardRecord>,
    mut stopping: watch::Receiver<bool>,
    dropped: Arc<AtomicU64>,
) {
    let mut errors = Occasional::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = stopping.wait_for(|stop| *stop) => true,
        };
        if stop {
            break;
        }
        // Everything queued now, in batches; cards that arrive meanwhile wait for the next tick.
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            while batch.len() < BATCH {
                match cards.try_recv() {
                    Ok(card) => batch.push(card),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let full = batch.len() == BATCH;
            if !write_batch(&store, &batch, &mut errors, true).await {
                dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            batch.clear();
            if !full {
                break;
            }
        }
    }
    // Shutdown: no new cards; what is queued is written without retries.
    cards.close();
    let mut rest = Vec::new();
    while let Ok(card) = cards.try_recv() {
        rest.push(card);
    }
    let flushed = rest.len();
    for batch in rest.chunks(BATCH) {
        if !write_batch(&store, batch, &mut errors, false).await {
            dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
    }
    if flushed > 0 {
        info!(cards = flushed, "card log flushed");
    }
}

/// Writes one batch (retrying when `retry`); `false` when its cards were dropped.
async fn write_batch(store: &Store, batch: &[CardRecord], errors: &mut Occasional, retry: bool) -> bool {
    let mut wait = FIRST_RETRY;
    let attempts = if retry { ATTEMPTS } else { 1 };
    for attempt in 1..=attempts {
        match store.insert_cards(batch).await {
            Ok(_) => {
                metrics::counter!(ops::CARD_LOG, "outcome" => "written").increment(batch.len() as u64);
                return true;
            }
            Err(error) => {
                metrics::counter!(ops::STORE_ERRORS, "operation" => "card_log").increment(1);
                if attempt == attempts {
                    metrics::counter!(ops::CARD_LOG, "outcome" => "store_error").increment(batch.len() as u64);
                    errors.warn(|times| {
                        warn!(
                            cards = batch.len(),
                            times,
                            %error,
                            "card log: the store refused a batch; its cards are not logged"
                        )
                    });
                    return false;
                }
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
    false
}
