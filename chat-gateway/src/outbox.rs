//! A connection's outbox: what is to be written to its client ([`Outbound`]), in a queue that
//! is bounded, with many senders (the connection's reader, room fan-out, account changes) and
//! one receiver (the connection's writer).
//!
//! Any sender can also end the queue with a last item ([`Sender::stop`]): the receiver gets
//! it instead of anything still queued, even while it is busy elsewhere
//! ([`Receiver::stopped`]).
//! The connection uses it for what must end the writer now: a fan-out that found the queue
//! full, the reader closing the connection, or the user's account being revoked.
//!
//! Every open connection owns one, idle or not, so it is built to cost little while empty:
//! one small shared allocation and a `VecDeque` that allocates on first use and gives back
//! what a burst made it grow to once it is drained. (A tokio `mpsc` channel costs about a
//! kilobyte per connection before anything is sent: a cache-padded channel and a first block
//! of 32 slots.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use common::domain::{MessageId, RoomId};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// What a connection's writer receives, in order. Kept to one pointer (every queued item
/// takes its size in the outbox): frames and live messages are shared by all their
/// recipients, the rest is boxed.
#[derive(Debug)]
pub enum Outbound {
    /// A frame written as is.
    Frame(Arc<Utf8Bytes>),
    /// A live chat message of a room; deduplicated against history at the join seam.
    RoomMessage(Arc<LiveMessage>),
    /// A join is in progress: hold the room's live messages until its `joined` frame.
    BeginJoin(Box<RoomId>),
    /// The `joined` frame; live messages held since `BeginJoin` follow it, minus the ones
    /// already in `history`.
    Joined(Box<JoinedFrame>),
    /// The room was left (or the join failed): drop what is held for it.
    Forget(Box<RoomId>),
    /// Time to ping the client.
    Ping,
    /// The queue overflowed while fanning out this room: tell the client and close.
    /// Sent with [`Sender::stop`].
    Lagged(Box<RoomId>),
    /// The gateway cannot tell whether the connection got every message of the room after
    /// this id (a room not read back after a lost broker connection): tell the client to
    /// rejoin from it, and close as for [`Outbound::Lagged`]. Sent with [`Sender::stop`].
    Resync(Box<(RoomId, MessageId)>),
    /// Close the connection, with this close frame if any. Sent with [`Sender::stop`].
    Close(Option<Box<CloseFrame>>),
}

const _: () = assert!(std::mem::size_of::<Outbound>() == 16);

/// A chat message as delivered live: serialized once, shared by every local member.
#[derive(Debug)]
pub struct LiveMessage {
    pub room: RoomId,
    pub id: MessageId,
    pub frame: Utf8Bytes,
}

impl LiveMessage {
    /// The `message` frame of `message`, serialized once.
    pub fn of(message: &common::event::ChatMessage) -> Arc<Self> {
        Arc::new(Self {
            room: message.room.clone(),
            id: message.id,
            frame: Utf8Bytes::from(crate::protocol::ServerFrame::Message(message).to_text()),
        })
    }
}

/// A `joined` frame and the ids of the messages it carries.
#[derive(Debug)]
pub struct JoinedFrame {
    pub room: RoomId,
    pub frame: Utf8Bytes,
    pub history: Vec<MessageId>,
}

/// Capacity kept by an empty queue; a drained queue that grew beyond it shrinks back.
const KEEP_WHEN_EMPTY: usize = 16;

struct Shared<T> {
    state: Mutex<State<T>>,
    /// An item arrived, or the last sender left (single receiver: `notify_one` keeps a permit).
    items: Notify,
    /// Room was freed, or the receiver left.
    room: Notify,
    capacity: usize,
}

struct State<T> {
    queue: VecDeque<T>,
    /// The item that ends the queue, once a sender stopped it.
    stop: Option<T>,
    /// A sender stopped the queue (the item may be taken already).
    stopped: bool,
    senders: usize,
    receiver_alive: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why [`Sender::try_send`] did not queue the item.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue holds `capacity` items.
    Full,
    /// The receiver is gone, or the queue was stopped.
    Closed,
}

/// The receiver is gone, or the queue was stopped.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

/// A queue holding at most `capacity` items.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            stop: None,
            stopped: false,
            senders: 1,
            receiver_alive: true,
        }),
        items: Notify::new(),
        room: Notify::new(),
        capacity: capacity.max(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.items.notify_one();
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full or the receiver is gone; never waits.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError> {
        {
            let mut state = self.shared.lock();
            if !state.receiver_alive || state.stopped {
                return Err(TrySendError::Closed);
            }
            if state.queue.len() >= self.shared.capacity {
                return Err(TrySendError::Full);
            }
            state.queue.push_back(item);
        }
        self.shared.items.notify_one();
        Ok(())
    }

    /// Queues `item`, waiting for room while the queue is full.
    pub async fn send(&self, item: T) -> Result<(), Closed> {
        let mut item = Some(item);
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            // Registered before looking, so room freed in between is not missed.
            room.as_mut().enable();
            {
                let mut state = self.shared.lock();
                if !state.receiver_alive || state.stopped {
                    return Err(Closed);
                }
                if state.queue.len() < self.shared.capacity {
                    if let Some(item) = item.take() {
                        state.queue.push_back(item);
                    }
                    drop(state);
                    self.shared.items.notify_one();
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Ends the queue with `last`: the receiver gets it next and then nothing else; what is
    /// still queued is dropped, and nothing is queued after it. Only the first stop counts;
    /// returns whether it was this one.
    pub fn stop(&self, last: T) -> bool {
        let dropped = {
            let mut state = self.shared.lock();
            if !state.receiver_alive || state.stopped {
                return false;
            }
            state.stopped = true;
            state.stop = Some(last);
            std::mem::take(&mut state.queue)
        };
        drop(dropped);
        self.shared.items.notify_one();
        // Senders waiting for room would wait for nothing now.
        self.shared.room.notify_waiters();
        true
    }

    /// Completes once the receiver is gone.
    pub async fn closed(&self) {
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if !self.shared.lock().receiver_alive {
                return;
            }
            room.await;
        }
    }
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let dropped = {
            let mut state = self.shared.lock();
            state.receiver_alive = false;
            std::mem::take(&mut state.queue)
        };
        drop(dropped);
        self.shared.room.notify_waiters();
    }
}

impl<T> Receiver<T> {
    /// The next item (a stop item first), or `None` once every sender is gone and the queue
    /// is empty. Cancel-safe: an item is taken only by the call that returns it.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            if let Some(next) = self.try_recv() {
                return next;
            }
            self.shared.items.notified().await;
        }
    }

    /// The next item without waiting: `Some(Some(item))`, `Some(None)` once every sender is
    /// gone and the queue is empty, `None` when empty for now.
    pub fn try_recv(&mut self) -> Option<Option<T>> {
        let mut state = self.shared.lock();
        if let Some(last) = state.stop.take() {
            return Some(Some(last));
        }
        match state.queue.pop_front() {
            Some(item) => {
                let full_before = state.queue.len() + 1 >= self.shared.capacity;
                if state.queue.is_empty() && state.queue.capacity() > KEEP_WHEN_EMPTY {
                    state.queue.shrink_to(KEEP_WHEN_EMPTY);
                }
                drop(state);
                if full_before {
                    self.shared.room.notify_waiters();
                }
                Some(Some(item))
            }
            None if state.senders == 0 || state.stopped => Some(None),
            None => None,
        }
    }

    /// Completes with the stop item once a sender stopped the queue; for a receiver busy with
    /// something else that must end early then. Cancel-safe like [`Receiver::recv`].
    pub async fn stopped(&mut self) -> T {
        loop {
            if let Some(last) = self.shared.lock().stop.take() {
                return last;
            }
            self.shared.items.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A `send` of `item` on a queue that is full, still waiting after 50 ms.
    async fn blocked_send(
        tx: &Sender<i32>,
        item: i32,
    ) -> tokio::task::JoinHandle<Result<(), Closed>> {
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(item).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "send went past a full queue");
        waiting
    }

    #[tokio::test]
    async fn items_arrive_in_order_and_a_full_queue_refuses_without_waiting() {
        let (tx, mut rx) = bounded(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(tx.try_send(3), Ok(()));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn send_waits_for_room_and_completes_once_an_item_is_taken() {
        let (tx, mut rx) = bounded(1);
        tx.send(1).await.expect("room");
        let waiting = blocked_send(&tx, 2).await;
        assert_eq!(rx.recv().await, Some(1));
        let sent = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert_eq!(sent.expect("woken").expect("task"), Ok(()));
        assert_eq!(rx.recv().await, Some(2));
    }

    #[tokio::test]
    async fn recv_ends_when_the_last_sender_is_gone_after_the_queue_drains() {
        let (tx, mut rx) = bounded(4);
        let other = tx.clone();
        tx.try_send(1).expect("queued");
        drop(tx);
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "ended while a sender was left");
        drop(other);
        let (first, second) = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!((first, second), (Some(1), None));
    }

    #[tokio::test]
    async fn senders_fail_once_the_receiver_is_gone_even_while_waiting_for_room() {
        let (tx, rx) = bounded(1);
        tx.try_send(1).expect("queued");
        let waiting = blocked_send(&tx, 2).await;
        drop(rx);
        let sent = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert_eq!(sent.expect("woken").expect("task"), Err(Closed));
        assert_eq!(tx.try_send(3), Err(TrySendError::Closed));
    }

    #[tokio::test]
    async fn a_stop_comes_before_what_is_queued_and_ends_the_queue() {
        let (tx, mut rx) = bounded(4);
        tx.try_send(1).expect("queued");
        assert!(tx.stop(9));
        assert!(!tx.stop(8), "a second stop replaced the first");
        assert_eq!(tx.try_send(2), Err(TrySendError::Closed));
        assert_eq!(tx.send(3).await, Err(Closed));
        assert_eq!(rx.recv().await, Some(9));
        assert_eq!(
            rx.recv().await,
            None,
            "items queued before the stop came after it"
        );
        assert!(
            rx.shared.lock().queue.capacity() == 0,
            "the dropped items kept their room"
        );
    }

    #[tokio::test]
    async fn stopped_wakes_a_receiver_busy_elsewhere_and_ignores_plain_items() {
        let (tx, mut rx) = bounded(4);
        let waiting = tokio::spawn(async move { rx.stopped().await });
        tx.try_send(1).expect("queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "an item ended the wait");
        assert!(tx.stop(7));
        let last = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert_eq!(last.expect("woken").expect("task"), 7);
    }

    #[tokio::test]
    async fn a_sender_waiting_for_room_fails_once_the_queue_is_stopped() {
        let (tx, _rx) = bounded(1);
        tx.try_send(1).expect("queued");
        let waiting = blocked_send(&tx, 2).await;
        assert!(tx.stop(0));
        let sent = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert_eq!(sent.expect("woken").expect("task"), Err(Closed));
    }

    #[tokio::test]
    async fn closed_completes_when_the_receiver_is_dropped() {
        let (tx, rx) = bounded::<u8>(1);
        let waiting = tokio::spawn(async move { tx.closed().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "closed while the receiver was alive"
        );
        drop(rx);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .expect("task");
    }

    #[tokio::test]
    async fn a_drained_queue_gives_back_what_a_burst_grew_it_to() {
        let (tx, mut rx) = bounded(1000);
        for i in 0..1000 {
            tx.try_send(i).expect("queued");
        }
        for i in 0..1000 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert!(rx.shared.lock().queue.capacity() <= KEEP_WHEN_EMPTY);
    }
}
