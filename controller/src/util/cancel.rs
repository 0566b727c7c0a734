//! Cancellation of a run: a token shared between the caller and the run.
//!
//! [`CancelToken::cancel`] sets a flag the loop checks between steps, wakes every
//! [`CancelToken::sleep`] (backoff waits), and runs the hooks the run registered: the run's
//! sandbox registers one that sends SIGTERM to its launcher, which kills every process of
//! the sandbox and removes its cgroup, so a running `bash` command dies at once; a model call
//! in flight is abandoned (its thread finishes on its own, bounded by the HTTP timeouts).

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Hook = Box<dyn FnMut() + Send>;

#[derive(Default)]
struct State {
    cancelled: bool,
    next_id: u64,
    hooks: Vec<(u64, Hook)>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    cv: Condvar,
}

/// Cancels a run. Clones share one flag; cancelling is permanent.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<Inner>);

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Unregisters a hook when dropped (see [`CancelToken::on_cancel`]).
pub struct HookGuard {
    token: CancelToken,
    id: u64,
}

impl fmt::Debug for HookGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookGuard").field("id", &self.id).finish()
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        // Taking the lock also waits for a hook that is running right now: once the guard is
        // gone, the hook never runs again (the sandbox hook relies on this before it reaps
        // the launcher, so a signal can never reach a reused pid).
        let mut st = self.token.lock();
        st.hooks.retain(|(id, _)| *id != self.id);
    }
}

impl CancelToken {
    /// A fresh token.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cancels: sets the flag, runs the registered hooks, wakes sleepers. Idempotent.
    pub fn cancel(&self) {
        let mut st = self.lock();
        if st.cancelled {
            return;
        }
        st.cancelled = true;
        for (_, hook) in st.hooks.iter_mut() {
            hook();
        }
        drop(st);
        self.0.cv.notify_all();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Sleeps `d`, waking early on cancellation. Returns `false` when cancelled.
    pub fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        let mut st = self.lock();
        loop {
            if st.cancelled {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            st = self
                .0
                .cv
                .wait_timeout(st, end - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Runs `hook` when the token is cancelled (at once if it already is). The hook runs
    /// with the token's lock held: keep it short (a signal, a channel send) and never call
    /// back into the token from it. Dropping the guard unregisters it.
    pub fn on_cancel(&self, mut hook: impl FnMut() + Send + 'static) -> HookGuard {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        if st.cancelled {
            hook();
        } else {
            st.hooks.push((id, Box::new(hook)));
        }
        HookGuard {
            token: self.clone(),
            id,
        }
    }
}

/// Cancels `token` on SIGINT/SIGTERM; a second signal exits at once. The signals are
/// blocked in the calling thread (and so in every thread it starts afterwards) and taken
/// by a thread waiting in `sigwait`. Used by the CLI's long operations (`run`, `skill run`).
pub fn cancel_on_signals(token: CancelToken) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if set.thread_block().is_err() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("bulkhead-signals".into())
        .spawn(move || {
            let mut seen = 0;
            while let Ok(sig) = set.wait() {
                seen += 1;
                if seen > 1 {
                    std::process::exit(128 + sig as i32);
                }
                eprintln!("bulkhead: {sig}: cancelling (again to exit now)");
                token.cancel();
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn hooks_run_once_and_unregister() {
        let t = CancelToken::new();
        let n = Arc::new(AtomicUsize::new(0));
        let n1 = n.clone();
        let g1 = t.on_cancel(move || {
            n1.fetch_add(1, Ordering::SeqCst);
        });
        let n2 = n.clone();
        let g2 = t.on_cancel(move || {
            n2.fetch_add(10, Ordering::SeqCst);
        });
        drop(g2);
        t.cancel();
        t.cancel();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        drop(g1);
        // Registered after cancellation: runs at once.
        let n3 = n.clone();
        let _g3 = t.on_cancel(move || {
            n3.fetch_add(100, Ordering::SeqCst);
        });
        assert_eq!(n.load(Ordering::SeqCst), 101);
        assert!(t.clone().is_cancelled());
    }

    #[test]
    fn sleep_wakes_on_cancel() {
        let t = CancelToken::new();
        assert!(t.sleep(Duration::from_millis(5)));
        let t2 = t.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            t2.cancel();
        });
        let start = Instant::now();
        assert!(!t.sleep(Duration::from_secs(30)));
        assert!(start.elapsed() < Duration::from_secs(10));
        h.join().unwrap();
    }
}
