//! A future polled only when it asked to be: the relay's watchers (idle timer, shutdown,
//! revocation, operator cut) sit next to the copy loop in one task, and a task is woken for
//! all of its futures at once. Polling every watcher on each wake-up (every record moved)
//! cost a lock per cancellation token; [`OnWake`] gives the watcher a waker of its own and
//! polls it only after that waker fired, so moving bytes costs one atomic swap instead.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// The watcher's own waker: notes that the watcher has something to look at, then wakes
/// the task that holds it.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Wraps `inner` so that it is polled on its first poll and then only after it woke.
pub(super) struct OnWake<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    waker: Waker,
    /// The task waker last registered (tasks keep theirs, so this is compared, not stored
    /// again, on each poll).
    registered: Option<Waker>,
}

impl<F: Future> OnWake<F> {
    /// `inner`, to be polled when it woke.
    pub(super) fn new(inner: F) -> OnWake<F> {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        OnWake {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
            registered: None,
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Registered before the flag is read: a wake between the two is not lost.
        if !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            this.flag.task.register(cx.waker());
            this.registered = Some(cx.waker().clone());
        }
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, waking through the last waker it got.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn polls_the_inner_future_only_after_it_woke() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut gated = OnWake::new(Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: waker.clone(),
        });
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        // First poll reaches the inner future; later ones do not until it wakes.
        for _ in 0..5 {
            assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // The inner future becomes ready and wakes: the next poll reaches it.
        ready.store(true, Ordering::SeqCst);
        waker.lock().unwrap().take().unwrap().wake();
        assert!(Pin::new(&mut gated).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_wake_from_another_thread_wakes_the_task() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let n = notify.clone();
        let gated = OnWake::new(async move { n.notified().await });
        let waiter = tokio::spawn(gated);
        tokio::task::yield_now().await;
        std::thread::spawn(move || notify.notify_one());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the gated future's wake must reach its task")
            .unwrap();
    }
}
