//! Acknowledgement tokens.
//!
//! An [`Ack`] stands for one source message. Clones share one token; when the last clone is
//! dropped, the token reports `id` to its [`AckReceiver`] exactly once. Holding a clone is how a
//! sink says "not yet accepted"; there is no explicit "ack" call to forget.

use std::fmt;
use std::sync::Arc;

/// Told when every holder of a message's token is done.
pub trait AckReceiver: Send + Sync {
    /// The message `id` is fully processed.
    fn done(&self, id: u64);
}

struct Inner {
    id: u64,
    receiver: Arc<dyn AckReceiver>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.receiver.done(self.id);
    }
}

/// A shared acknowledgement token; see the module docs.
#[derive(Clone)]
pub struct Ack(Arc<Inner>);

impl Ack {
    /// A token that tells `receiver` about `id` when its last clone is dropped.
    pub fn new(id: u64, receiver: Arc<dyn AckReceiver>) -> Self {
        Ack(Arc::new(Inner { id, receiver }))
    }

    /// A token that reports to no one (tests, CLI decoding).
    pub fn none() -> Self {
        struct Nobody;
        impl AckReceiver for Nobody {
            fn done(&self, _: u64) {}
        }
        Ack::new(0, Arc::new(Nobody))
    }

    /// The message id.
    pub fn id(&self) -> u64 {
        self.0.id
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Ack").field(&self.0.id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<u64>>);
    impl AckReceiver for Log {
        fn done(&self, id: u64) {
            self.0.lock().expect("lock").push(id);
        }
    }

    #[test]
    fn reports_once_when_the_last_clone_drops() {
        let log = Arc::new(Log::default());
        let a = Ack::new(7, log.clone());
        let b = a.clone();
        drop(a);
        assert!(log.0.lock().expect("lock").is_empty());
        drop(b);
        assert_eq!(*log.0.lock().expect("lock"), vec![7]);
    }
}
