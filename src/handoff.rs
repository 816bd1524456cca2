//! A bounded queue from the request path to one background task.

use std::sync::Mutex;

use tokio::sync::mpsc;

/// Holds up to `N` messages for one background task. Sending never waits (a full queue refuses
/// the message); the receiving end is taken once, by the task that starts first, and messages
/// sent before it starts wait in the queue.
pub(crate) struct Handoff<T, const N: usize> {
    tx: mpsc::Sender<T>,
    rx: Mutex<Option<mpsc::Receiver<T>>>,
}

impl<T, const N: usize> Default for Handoff<T, N> {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(N);
        Handoff {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl<T, const N: usize> Handoff<T, N> {
    /// Queues `message` without waiting; false when the queue is full or its task has ended.
    pub(crate) fn send(&self, message: T) -> bool {
        self.tx.try_send(message).is_ok()
    }

    /// The receiving end: `Some` for the first caller only.
    pub(crate) fn take_receiver(&self) -> Option<mpsc::Receiver<T>> {
        self.rx.lock().ok()?.take()
    }
}

#[cfg(test)]
mod tests {
    use super::Handoff;

    #[test]
    fn messages_wait_for_the_one_receiver_and_a_full_queue_refuses() {
        let q: Handoff<u8, 2> = Handoff::default();
        assert!(q.send(1) && q.send(2));
        assert!(!q.send(3), "a full queue refuses without waiting");
        let mut rx = q
            .take_receiver()
            .expect("the first taker gets the receiver");
        assert!(q.take_receiver().is_none(), "only once");
        assert_eq!((rx.try_recv(), rx.try_recv()), (Ok(1), Ok(2)));
        drop(rx);
        assert!(!q.send(4), "its task has ended");
    }
}
