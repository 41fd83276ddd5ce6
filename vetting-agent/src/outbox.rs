//! The outbox of log lines and sensor samples: every item gets the run's
//! next sequence number (from the claim's `next_log_seq` /
//! `next_sensor_seq`, no gaps), waits in a bounded queue and is sent in
//! batches by a flusher task until the orchestrator acknowledges it.
//!
//! Nothing is lost: a full queue blocks the producer instead of dropping,
//! and the flusher retries with exponential backoff (capped at 5 s) for as
//! long as the orchestrator is unreachable. The orchestrator answers
//! [`BatchAck`]`{next_seq}`: items below it are stored and dropped here,
//! the rest are sent again. Only an item the orchestrator refuses for good
//! (a 4xx that a retry cannot fix) is given up, and said so.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use vetting_probes::protocol::{BatchAck, LogLine, LogStream, SensorSample, StageRef};

use crate::client::{Backoff, ClientError};

/// The default bound of a queue.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// How long the flusher waits after the first queued item for more to
/// join the batch.
const LINGER: Duration = Duration::from_millis(100);

/// The largest batch, in items and in (approximate) JSON bytes: well under
/// the orchestrator's body limits (4 MiB for logs, 2 MiB for sensors).
const MAX_BATCH_ITEMS: usize = 2_000;
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The longest log line sent as one line; longer text is split.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// An item with a sequence number.
pub trait Sequenced: Clone + Send + Sync + 'static {
    fn seq(&self) -> u64;
    fn set_seq(&mut self, seq: u64);
    /// About how many bytes the item takes in a JSON batch.
    fn approx_bytes(&self) -> usize;
}

impl Sequenced for LogLine {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }
    fn approx_bytes(&self) -> usize {
        self.text.len() + 120
    }
}

impl Sequenced for SensorSample {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }
    fn approx_bytes(&self) -> usize {
        self.name.len() + self.unit.len() + 140
    }
}

struct State<T> {
    /// The sequence number the next pushed item gets.
    next_seq: u64,
    /// Items not yet acknowledged, in sequence order.
    queue: VecDeque<T>,
    /// Items given up (refused for good by the orchestrator).
    given_up: u64,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Signalled when room is freed (blocking producers).
    room: Condvar,
    /// Signalled when room is freed (async producers).
    room_async: Notify,
    /// Signalled when an item is queued (the flusher).
    queued: Notify,
    /// Everything below this sequence number is acknowledged (or given up).
    acked: watch::Sender<u64>,
}

/// A bounded, sequence-numbering queue shared by producers and the flusher.
pub struct Outbox<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Outbox {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> std::fmt::Debug for Outbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Outbox")
            .field("next_seq", &state.next_seq)
            .field("queued", &state.queue.len())
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

impl<T: Sequenced> Outbox<T> {
    /// An outbox whose first item gets `start_seq`, holding at most
    /// `capacity` unacknowledged items.
    pub fn new(start_seq: u64, capacity: usize) -> Self {
        let (acked, _) = watch::channel(start_seq);
        Outbox {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    next_seq: start_seq,
                    queue: VecDeque::new(),
                    given_up: 0,
                }),
                capacity: capacity.max(1),
                room: Condvar::new(),
                room_async: Notify::new(),
                queued: Notify::new(),
                acked,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers and queues an item if there is room; gives it back if not.
    fn try_push(&self, mut item: T) -> Result<u64, T> {
        let mut state = self.lock();
        if state.queue.len() >= self.shared.capacity {
            return Err(item);
        }
        let seq = state.next_seq;
        item.set_seq(seq);
        state.next_seq += 1;
        state.queue.push_back(item);
        drop(state);
        self.shared.queued.notify_one();
        Ok(seq)
    }

    /// Queues an item from a thread, waiting while the queue is full.
    /// Returns the item's sequence number.
    pub fn push_blocking(&self, mut item: T) -> u64 {
        loop {
            match self.try_push(item) {
                Ok(seq) => return seq,
                Err(back) => item = back,
            }
            let state = self.lock();
            if state.queue.len() >= self.shared.capacity {
                // Re-checked after a timeout too, in case a wake-up was missed.
                let _ = self
                    .shared
                    .room
                    .wait_timeout(state, Duration::from_millis(200));
            }
        }
    }

    /// Queues an item from async code, waiting while the queue is full.
    pub async fn push(&self, mut item: T) -> u64 {
        loop {
            let room = self.shared.room_async.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(item) {
                Ok(seq) => return seq,
                Err(back) => item = back,
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), room).await;
        }
    }

    /// How many items wait for acknowledgement.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// The sequence number the next item will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Everything below this is acknowledged (or given up).
    pub fn acked_seq(&self) -> u64 {
        *self.shared.acked.borrow()
    }

    /// How many items the orchestrator refused for good.
    pub fn given_up(&self) -> u64 {
        self.lock().given_up
    }

    /// The oldest unacknowledged items, copied: at most `max_items` and
    /// about `max_bytes` (at least one item).
    pub fn peek_batch(&self, max_items: usize, max_bytes: usize) -> Vec<T> {
        let state = self.lock();
        let mut bytes = 0;
        let mut batch = Vec::new();
        for item in state.queue.iter().take(max_items.max(1)) {
            bytes += item.approx_bytes();
            if !batch.is_empty() && bytes > max_bytes {
                break;
            }
            batch.push(item.clone());
        }
        batch
    }

    /// Drops every item below `next_seq` (the orchestrator has them).
    /// When the orchestrator expects an item older than any still held
    /// (it lost stored items), the held items are renumbered from its
    /// `next_seq` so that it accepts them, and that is reported.
    pub fn acknowledge(&self, next_seq: u64) {
        let mut state = self.lock();
        while state
            .queue
            .front()
            .is_some_and(|item| item.seq() < next_seq)
        {
            state.queue.pop_front();
        }
        let first_held = state.queue.front().map_or(state.next_seq, Sequenced::seq);
        if next_seq < first_held {
            tracing::error!(
                expected = next_seq,
                first_held,
                "the orchestrator expects items this agent no longer holds; renumbering the rest"
            );
            let mut seq = next_seq;
            for item in state.queue.iter_mut() {
                item.set_seq(seq);
                seq += 1;
            }
            state.next_seq = seq;
        } else if next_seq > state.next_seq {
            // The orchestrator is ahead (it stored items of an earlier agent
            // process): continue from there.
            state.next_seq = next_seq;
        }
        let acked = state.queue.front().map_or(state.next_seq, Sequenced::seq);
        drop(state);
        self.shared.acked.send_replace(acked);
        self.shared.room.notify_all();
        self.shared.room_async.notify_waiters();
    }

    /// Gives up the oldest `count` items (refused for good).
    fn give_up(&self, count: usize) {
        let mut state = self.lock();
        let count = count.min(state.queue.len());
        state.queue.drain(..count);
        state.given_up += count as u64;
        let acked = state.queue.front().map_or(state.next_seq, Sequenced::seq);
        drop(state);
        self.shared.acked.send_replace(acked);
        self.shared.room.notify_all();
        self.shared.room_async.notify_waiters();
    }

    /// Waits until every item queued before this call is acknowledged (or
    /// given up); `false` when `timeout` passed first.
    pub async fn drained(&self, timeout: Option<Duration>) -> bool {
        let target = self.next_seq();
        let mut acked = self.shared.acked.subscribe();
        let wait = acked.wait_for(|&acked| acked >= target);
        match timeout {
            Some(limit) => matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(_))),
            None => wait.await.is_ok(),
        }
    }

    /// Waits until an item is queued or `limit` passes.
    async fn wait_queued(&self, limit: Duration) {
        let queued = self.shared.queued.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        if !self.is_empty() {
            return;
        }
        let _ = tokio::time::timeout(limit, queued).await;
    }
}

/// Sends the outbox's items in batches with `send` until the process ends:
/// retryable errors back off (100 ms doubling to 5 s) and resend; a batch
/// refused for good is split to find the refused item, which is given up;
/// a 401/403/404 (the run is over or unknown) gives up the whole batch.
pub async fn run_flusher<T, F, Fut>(outbox: Outbox<T>, name: &'static str, send: F)
where
    T: Sequenced,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Result<BatchAck, ClientError>>,
{
    let mut backoff = Backoff::standard();
    let mut batch_limit = MAX_BATCH_ITEMS;
    let mut failing_since: Option<Instant> = None;
    loop {
        if outbox.is_empty() {
            outbox.wait_queued(Duration::from_secs(1)).await;
            if outbox.is_empty() {
                continue;
            }
            tokio::time::sleep(LINGER).await;
        }
        let batch = outbox.peek_batch(batch_limit, MAX_BATCH_BYTES);
        if batch.is_empty() {
            continue;
        }
        let count = batch.len();
        match send(batch).await {
            Ok(ack) => {
                outbox.acknowledge(ack.next_seq);
                backoff.reset();
                batch_limit = MAX_BATCH_ITEMS;
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        "{name}: the orchestrator accepts batches again after {:.1} s",
                        since.elapsed().as_secs_f64()
                    );
                }
            }
            Err(error) if error.is_retryable() => {
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::warn!("{name}: {error}; keeping the items and retrying");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(error) => {
                let gone = matches!(error.status(), Some(401 | 403 | 404));
                if gone || count == 1 {
                    tracing::error!("{name}: giving up {count} item(s): {error}");
                    outbox.give_up(count);
                } else {
                    batch_limit = (count / 2).max(1);
                    tracing::warn!("{name}: {error}; retrying in batches of {batch_limit}");
                }
            }
        }
    }
}

/// Where a stage's log lines go: numbered into the log outbox, and mirrored
/// to the agent's own stderr (tracing) for agent messages.
#[derive(Debug, Clone)]
pub struct LogSink {
    outbox: Outbox<LogLine>,
    stage: Option<StageRef>,
}

impl LogSink {
    pub fn new(outbox: Outbox<LogLine>, stage: Option<StageRef>) -> Self {
        LogSink { outbox, stage }
    }

    /// The same outbox, for another stage.
    pub fn for_stage(&self, stage: Option<StageRef>) -> Self {
        LogSink {
            outbox: self.outbox.clone(),
            stage,
        }
    }

    pub fn outbox(&self) -> &Outbox<LogLine> {
        &self.outbox
    }

    fn line(stage: Option<StageRef>, stream: LogStream, text: String) -> LogLine {
        LogLine {
            seq: 0,
            at_ms: chrono::Utc::now().timestamp_millis(),
            stage,
            stream,
            text,
        }
    }

    /// Queues a line from a thread (blocks while the outbox is full); long
    /// text is split into several lines.
    pub fn emit_blocking(&self, stream: LogStream, text: &str) {
        for piece in split_long(text) {
            self.outbox
                .push_blocking(Self::line(self.stage, stream, piece));
        }
    }

    /// Queues a line from async code.
    pub async fn emit(&self, stream: LogStream, text: &str) {
        for piece in split_long(text) {
            self.outbox
                .push(Self::line(self.stage, stream, piece))
                .await;
        }
    }

    /// An agent message, from a thread: logged here and sent.
    pub fn agent(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        tracing::info!(target: "vetting_agent", stage = ?self.stage.map(|s| s.stage), "{text}");
        self.emit_blocking(LogStream::Agent, text);
    }

    /// An agent message, from async code.
    pub async fn agent_async(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        tracing::info!(target: "vetting_agent", stage = ?self.stage.map(|s| s.stage), "{text}");
        self.emit(LogStream::Agent, text).await;
    }
}

/// Splits text into its lines, and lines longer than [`MAX_LINE_BYTES`]
/// at character boundaries (a log line is one line of the run's log file).
fn split_long(text: &str) -> Vec<String> {
    if !text.contains('\n') && text.len() <= MAX_LINE_BYTES {
        return vec![text.to_string()];
    }
    let mut pieces = Vec::new();
    for line in text.lines() {
        split_line(line, &mut pieces);
    }
    if pieces.is_empty() {
        pieces.push(String::new());
    }
    pieces
}

fn split_line(line: &str, pieces: &mut Vec<String>) {
    let line = line.trim_end_matches('\r');
    if line.len() <= MAX_LINE_BYTES {
        pieces.push(line.to_string());
        return;
    }
    let mut rest = line;
    while rest.len() > MAX_LINE_BYTES {
        let mut cut = MAX_LINE_BYTES;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        pieces.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    pieces.push(rest.to_string());
}

/// Where sensor readings go: numbered into the sensor outbox. Readings that
/// are not finite numbers are not sent (the orchestrator refuses them).
#[derive(Debug, Clone)]
pub struct SensorSink {
    outbox: Outbox<SensorSample>,
    stage: Option<StageRef>,
}

impl SensorSink {
    pub fn new(outbox: Outbox<SensorSample>, stage: Option<StageRef>) -> Self {
        SensorSink { outbox, stage }
    }

    pub fn for_stage(&self, stage: Option<StageRef>) -> Self {
        SensorSink {
            outbox: self.outbox.clone(),
            stage,
        }
    }

    pub fn outbox(&self) -> &Outbox<SensorSample> {
        &self.outbox
    }

    /// Queues a reading from a thread; `false` when it was not finite.
    pub fn record_blocking(&self, name: &str, value: f64, unit: &str) -> bool {
        if !value.is_finite() {
            return false;
        }
        self.outbox.push_blocking(SensorSample {
            seq: 0,
            at_ms: chrono::Utc::now().timestamp_millis(),
            stage: self.stage,
            name: name.to_string(),
            value,
            unit: unit.to_string(),
        });
        true
    }
}

/// Splits a tool's output stream into lines as chunks arrive: a line ends
/// at `\n` or `\r`, and runs of backspaces (badblocks' progress) end one
/// too; empty lines are dropped, the rest is kept whole.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk; returns the lines it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in chunk {
            if matches!(byte, b'\n' | b'\r' | 0x08) {
                self.take_line(&mut lines);
            } else {
                self.pending.push(byte);
                if self.pending.len() >= MAX_LINE_BYTES {
                    self.take_line(&mut lines);
                }
            }
        }
        lines
    }

    /// The last line, when the stream ended without a newline.
    pub fn finish(&mut self) -> Option<String> {
        let mut lines = Vec::new();
        self.take_line(&mut lines);
        lines.pop()
    }

    fn take_line(&mut self, lines: &mut Vec<String>) {
        if self.pending.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        if !text.trim().is_empty() {
            lines.push(text.trim_end().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogSink::line(None, LogStream::Agent, text.to_string())
    }

    #[test]
    fn items_are_numbered_from_the_start_without_gaps() {
        let outbox = Outbox::new(7, 10);
        for index in 0..5 {
            assert_eq!(outbox.push_blocking(line(&index.to_string())), 7 + index);
        }
        let batch = outbox.peek_batch(3, usize::MAX);
        assert_eq!(
            batch.iter().map(|l| l.seq).collect::<Vec<_>>(),
            vec![7, 8, 9]
        );
        outbox.acknowledge(9);
        assert_eq!(outbox.len(), 3);
        assert_eq!(outbox.acked_seq(), 9);
        outbox.acknowledge(12);
        assert!(outbox.is_empty());
        assert_eq!(outbox.acked_seq(), 12);
        assert_eq!(outbox.push_blocking(line("next")), 12);
    }

    #[test]
    fn a_full_outbox_blocks_the_producer_until_room_is_freed() {
        let outbox = Outbox::new(0, 2);
        outbox.push_blocking(line("a"));
        outbox.push_blocking(line("b"));
        let producer = {
            let outbox = outbox.clone();
            std::thread::spawn(move || outbox.push_blocking(line("c")))
        };
        // The producer cannot finish while the outbox is full.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!producer.is_finished());
        assert_eq!(outbox.len(), 2);
        outbox.acknowledge(1);
        assert_eq!(producer.join().unwrap(), 2);
        assert_eq!(outbox.len(), 2);
    }

    #[test]
    fn an_orchestrator_that_lost_items_gets_the_rest_renumbered() {
        let outbox = Outbox::new(10, 10);
        outbox.push_blocking(line("a"));
        outbox.push_blocking(line("b"));
        outbox.acknowledge(4);
        let seqs: Vec<u64> = outbox
            .peek_batch(10, usize::MAX)
            .iter()
            .map(|l| l.seq)
            .collect();
        assert_eq!(seqs, vec![4, 5]);
        assert_eq!(outbox.push_blocking(line("c")), 6);
    }

    #[test]
    fn batches_respect_the_byte_budget_but_hold_at_least_one_item() {
        let outbox = Outbox::new(0, 10);
        outbox.push_blocking(line(&"x".repeat(1000)));
        outbox.push_blocking(line(&"y".repeat(1000)));
        assert_eq!(outbox.peek_batch(10, 10).len(), 1);
        assert_eq!(outbox.peek_batch(10, 5000).len(), 2);
    }

    #[test]
    fn splitter_cuts_at_newlines_carriage_returns_and_backspaces() {
        let mut splitter = LineSplitter::default();
        let mut lines = splitter.feed(b"Checking blocks 0 to 4095\nTest");
        lines.extend(
            splitter.feed(b"ing with pattern 0xaa:  10.00% done\x08\x08\x08\x08 20.00% done\r\n"),
        );
        lines.extend(splitter.feed(b"Pass completed"));
        lines.extend(splitter.finish());
        assert_eq!(
            lines,
            vec![
                "Checking blocks 0 to 4095",
                "Testing with pattern 0xaa:  10.00% done",
                " 20.00% done",
                "Pass completed"
            ]
        );
    }

    #[test]
    fn long_lines_are_split() {
        let text = "é".repeat(MAX_LINE_BYTES);
        let pieces = split_long(&text);
        assert!(pieces.len() >= 2);
        assert_eq!(split_long("a\nb\r\n"), vec!["a", "b"]);
        assert!(pieces.iter().all(|piece| piece.len() <= MAX_LINE_BYTES));
        assert_eq!(pieces.concat(), text);
    }
}
