//! A named background thread of a context (the I/O thread, the ipc thread) with the
//! state other threads share with it, stopped and joined on shutdown or drop.

use std::sync::Arc;
use std::thread::JoinHandle;

/// A background thread and its shared state `S`. `stop` asks the thread to finish (it
/// queues a shutdown command and wakes the thread); [`Worker::shutdown`] then joins it.
pub(crate) struct Worker<S> {
    shared: Arc<S>,
    handle: Option<JoinHandle<()>>,
    name: &'static str,
    stop: fn(&S),
}

impl<S> Worker<S> {
    /// Starts `run` on a thread named `name`.
    pub(crate) fn spawn(
        name: &'static str,
        shared: Arc<S>,
        stop: fn(&S),
        run: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Worker<S>> {
        let handle = std::thread::Builder::new().name(name.into()).spawn(run)?;
        Ok(Worker {
            shared,
            handle: Some(handle),
            name,
            stop,
        })
    }

    /// What other threads share with the thread.
    pub(crate) fn shared(&self) -> &Arc<S> {
        &self.shared
    }

    /// Asks the thread to finish and joins it (once; later calls do nothing).
    pub(crate) fn shutdown(&mut self) {
        if let Some(h) = self.handle.take() {
            (self.stop)(&self.shared);
            if h.join().is_err() {
                tracing::error!("the {} thread panicked", self.name);
            }
        }
    }
}

impl<S> Drop for Worker<S> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl<S> std::fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).finish()
    }
}
