//! The threads that serve a mesh's proxies, as Envoy's worker threads do: each runs an
//! event loop of its own (a single-threaded tokio runtime), a listener hands each
//! accepted connection to the next worker in turn, and everything a connection does
//! (routing, its upstream connections, their pool) stays on its worker, so a request
//! never waits on a wake-up from another thread.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::runtime::Handle;

thread_local! {
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks the calling thread as worker `index` (called once by each worker thread).
pub fn set_current_worker(index: usize) {
    CURRENT.with(|c| c.set(Some(index)));
}

/// The worker the calling thread is, if it is one.
pub(crate) fn current_worker() -> Option<usize> {
    CURRENT.with(Cell::get)
}

/// The workers' runtimes; cheap to clone. Empty: connections stay on the runtime
/// that accepted them (tests, and runtimes shared with other work).
#[derive(Clone, Default)]
pub struct Workers {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workers({})", self.inner.handles.len())
    }
}

impl Workers {
    /// Workers on these runtimes; the runtime at index `i` runs on the thread that
    /// called [`set_current_worker`] with `i`.
    pub fn new(handles: Vec<Handle>) -> Workers {
        Workers {
            inner: Arc::new(Inner {
                handles,
                next: AtomicUsize::new(0),
            }),
        }
    }

    /// How many workers there are (at least one: the current runtime).
    pub fn count(&self) -> usize {
        self.inner.handles.len().max(1)
    }

    /// The runtime that runs listeners (the first worker), if there are workers.
    pub fn listener_runtime(&self) -> Option<&Handle> {
        self.inner.handles.first()
    }

    /// Runs `serve` for an accepted connection on the next worker in turn. A connection
    /// that changes worker is taken off this thread's reactor and registered with the
    /// other's.
    pub(crate) fn spawn_connection<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let n = self.inner.handles.len();
        if n <= 1 {
            tokio::spawn(serve(stream));
            return;
        }
        let target = self.inner.next.fetch_add(1, Ordering::Relaxed) % n;
        if current_worker() == Some(target) {
            tokio::spawn(serve(stream));
            return;
        }
        match stream.into_std() {
            Ok(stream) => {
                self.inner.handles[target].spawn(async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => serve(stream).await,
                        Err(e) => tracing::warn!("cannot hand a connection to a worker: {e}"),
                    }
                });
            }
            Err(e) => tracing::warn!("cannot hand a connection to a worker: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two worker threads, each a single-threaded runtime: connections accepted on the
    /// first are served in turn by both, each on its own thread.
    #[test]
    fn connections_are_handed_to_the_workers_in_turn() {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        for i in 0..2 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            handles.push(rt.handle().clone());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            threads.push(std::thread::spawn(move || {
                set_current_worker(i);
                let _ = rt.block_on(stopped);
            }));
        }
        let workers = Workers::new(handles.clone());
        let served_by = handles[0].block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let accept_workers = workers.clone();
            handles[0].spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    accept_workers.spawn_connection(stream, |mut s| async move {
                        let who = current_worker().map_or(9, |w| w as u8);
                        let _ = s.write_all(&[who]).await;
                    });
                }
            });
            let mut seen = Vec::new();
            for _ in 0..4 {
                let mut c = TcpStream::connect(addr).await.expect("connect");
                let mut b = [0u8; 1];
                c.read_exact(&mut b).await.expect("read");
                seen.push(b[0]);
            }
            seen
        });
        assert_eq!(served_by, vec![0, 1, 0, 1]);
        for s in stops {
            let _ = s.send(());
        }
        for t in threads {
            let _ = t.join();
        }
    }
}
