//! Idle HTTP/1 client connections (plain, and over TLS when the session holds nothing
//! decrypted), held by their worker rather than by a task of their own.
//!
//! A keep-alive connection spends most of its life waiting for its next request. A
//! task per waiting connection cost about 1,400 bytes of heap each (the task's cell,
//! 896 B with the serving future inside it, its shutdown waiter and head timer; the
//! connection's shared state and client record), twice what NGINX spends per idle
//! connection. Here a connection with nothing read of its next request is *parked*: its
//! socket and what keeps it counted go into one slot of its listener's [`Parking`] on
//! its worker, with one small waker registered for the socket's readability. One task
//! per listener and worker ([`Parking::run`]) takes parked connections out again:
//! - when the socket turns readable (the next request, or the client's close): the
//!   connection is served again, in a task of its own;
//! - when its deadline for the next request head (`header_timeout` after the last
//!   response) passes: it is closed;
//! - at shutdown: every parked connection is closed.
//!
//! How a wake-up finds its connection: each registration's waker carries the slot's
//! key and a generation number, and waking pushes them onto a queue the parking task
//! drains, so a wake-up costs the work for that connection only, whatever the number
//! parked. A key whose slot was emptied (its connection left) or refilled by another
//! connection (the generation differs) is ignored. Deadlines are kept in order, and
//! connections park nearly in that order (every connection of one listener on one
//! worker waits the same `header_timeout` after its last answer), so a parking is
//! nearly always added at the back.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use slab::Slab;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// A connection that can be parked: what it waits on.
pub trait Parkable {
    /// The socket whose readability ends the wait.
    fn socket(&self) -> &TcpStream;
}

/// Slots kept when nothing is parked any more (more are given back).
const SPARE_SLOTS: usize = 1024;

/// The parked connections of one listener on one worker.
pub struct Parking<T> {
    lot: RefCell<Lot<T>>,
    woken: Arc<Woken>,
    /// [`Parking::run`] has ended (shutdown): nothing is parked any more.
    closed: Cell<bool>,
    /// The deadline [`Parking::run`] waits for; a parking with an earlier one (or any,
    /// when it waits for none) wakes it to wait for that.
    armed: Cell<Option<Instant>>,
}

struct Lot<T> {
    slots: Slab<Slot<T>>,
    /// Each parking's deadline, key and generation, earliest deadline first; a parking
    /// whose connection has left stays until it reaches the front (or a tidy-up).
    deadlines: VecDeque<(Instant, usize, u32)>,
    next_generation: u32,
}

struct Slot<T> {
    generation: u32,
    deadline: Instant,
    connection: T,
}

/// The keys of parked connections whose sockets woke, for the parking task.
#[derive(Default)]
struct Woken {
    keys: Mutex<Vec<(usize, u32)>>,
    notify: Notify,
}

/// The waker registered for one parked socket.
struct SlotWaker {
    woken: Arc<Woken>,
    key: usize,
    generation: u32,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A poisoned lock only means a panic elsewhere while pushing: the keys are
        // still a plain list.
        let mut keys = self.woken.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.push((self.key, self.generation));
        drop(keys);
        self.woken.notify.notify_one();
    }
}

impl<T: Parkable> Default for Parking<T> {
    fn default() -> Self {
        Parking {
            lot: RefCell::new(Lot {
                slots: Slab::new(),
                deadlines: VecDeque::new(),
                next_generation: 0,
            }),
            woken: Arc::default(),
            closed: Cell::new(false),
            armed: Cell::new(None),
        }
    }
}

impl<T: Parkable> Parking<T> {
    /// Parks `connection` until its socket turns readable or `deadline` passes.
    /// `Err(connection)` when the socket is readable already (or failed), or after
    /// [`Parking::run`] has ended (shutdown): its caller serves it on, and finds it has
    /// something to serve or closes it.
    pub fn park(&self, connection: T, deadline: Instant) -> Result<(), T> {
        if self.closed.get() {
            return Err(connection);
        }
        let mut lot = self.lot.borrow_mut();
        let lot = &mut *lot;
        let generation = lot.next_generation;
        lot.next_generation = generation.wrapping_add(1);
        let entry = lot.slots.vacant_entry();
        let key = entry.key();
        let waker = Waker::from(Arc::new(SlotWaker {
            woken: Arc::clone(&self.woken),
            key,
            generation,
        }));
        if connection
            .socket()
            .poll_read_ready(&mut Context::from_waker(&waker))
            .is_ready()
        {
            return Err(connection);
        }
        entry.insert(Slot {
            generation,
            deadline,
            connection,
        });
        // Nearly always at the back: deadlines are `header_timeout` after each
        // connection's last answer, and connections park about a second after theirs
        // in that order, but not exactly (a busy worker's timers run late; a connection
        // woken with nothing to read parks again with its old deadline).
        let at = lot
            .deadlines
            .iter()
            .rposition(|&(earlier, ..)| earlier <= deadline)
            .map_or(0, |before| before + 1);
        lot.deadlines.insert(at, (deadline, key, generation));
        if self.armed.get().is_none_or(|armed| deadline < armed) {
            // The parking task waits for a later deadline or none: wake it for this one.
            self.armed.set(Some(deadline));
            self.woken.notify.notify_one();
        }
        // Parkings whose connections left are dropped as they reach the front; tidy
        // up when they outnumber the parked ones, so the queue stays in proportion.
        if lot.deadlines.len() > 2 * lot.slots.len() + 64 {
            let slots = &lot.slots;
            lot.deadlines
                .retain(|&(_, key, generation)| holds(slots, key, generation).is_some());
        }
        Ok(())
    }

    /// How many connections are parked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lot.borrow().slots.len()
    }

    /// Whether no connection is parked.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes parked connections out until `shutdown` turns true: each whose socket
    /// turned readable goes to `serve` with its deadline, each whose deadline passed to
    /// `close`, and at shutdown every one still parked (a parking after that is
    /// refused: [`Parking::park`]).
    pub async fn run(
        &self,
        mut shutdown: watch::Receiver<bool>,
        mut serve: impl FnMut(T, Instant),
        mut close: impl FnMut(T),
    ) {
        let next_deadline = tokio::time::sleep_until(Instant::now());
        tokio::pin!(next_deadline);
        loop {
            let first = self.first_deadline();
            self.armed.set(first);
            if let Some(first) = first {
                next_deadline.as_mut().reset(first);
            }
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stopping| *stopping) => break,
                () = self.woken.notify.notified() => {
                    for (connection, deadline) in self.take_woken() {
                        serve(connection, deadline);
                    }
                }
                () = &mut next_deadline, if first.is_some() => {
                    for connection in self.take_expired(Instant::now()) {
                        close(connection);
                    }
                }
            }
        }
        self.closed.set(true);
        let parked = std::mem::take(&mut self.lot.borrow_mut().slots);
        for (_, slot) in parked {
            close(slot.connection);
        }
    }

    /// The earliest deadline of a connection still parked, dropping the parkings of
    /// those that left.
    fn first_deadline(&self) -> Option<Instant> {
        let mut lot = self.lot.borrow_mut();
        let lot = &mut *lot;
        while let Some(&(deadline, key, generation)) = lot.deadlines.front() {
            if holds(&lot.slots, key, generation).is_some() {
                return Some(deadline);
            }
            lot.deadlines.pop_front();
        }
        // Nothing parked: after a peak, give back the room it took.
        if lot.slots.is_empty() && lot.slots.capacity() > SPARE_SLOTS {
            lot.slots = Slab::new();
            lot.deadlines = VecDeque::new();
        }
        None
    }

    /// The connections whose sockets woke, out of their slots, with their deadlines.
    fn take_woken(&self) -> Vec<(T, Instant)> {
        let keys = std::mem::take(&mut *self.woken.keys.lock().unwrap_or_else(|e| e.into_inner()));
        let mut lot = self.lot.borrow_mut();
        let mut woken = Vec::with_capacity(keys.len());
        for (key, generation) in keys {
            if holds(&lot.slots, key, generation).is_some() {
                let slot = lot.slots.remove(key);
                woken.push((slot.connection, slot.deadline));
            }
        }
        woken
    }

    /// The connections whose deadline is `now` or earlier, out of their slots.
    fn take_expired(&self, now: Instant) -> Vec<T> {
        let mut lot = self.lot.borrow_mut();
        let lot = &mut *lot;
        let mut expired = Vec::new();
        while let Some(&(deadline, key, generation)) = lot.deadlines.front() {
            if deadline > now {
                break;
            }
            if holds(&lot.slots, key, generation).is_some() {
                expired.push(lot.slots.remove(key).connection);
            }
            lot.deadlines.pop_front();
        }
        expired
    }
}

/// Slot `key`, if it holds the parking of `generation`.
fn holds<T>(slots: &Slab<Slot<T>>, key: usize, generation: u32) -> Option<&Slot<T>> {
    slots.get(key).filter(|slot| slot.generation == generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    struct Parked(TcpStream, &'static str);

    impl Parkable for Parked {
        fn socket(&self) -> &TcpStream {
            &self.0
        }
    }

    /// A connected pair on loopback: (the end to park, the peer's end).
    async fn pair(listener: &tokio::net::TcpListener) -> (TcpStream, TcpStream) {
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        // As the server parks a connection: after a read found nothing (a socket new
        // to the runtime starts out as readable).
        let nothing = accepted.try_read(&mut [0u8; 1]);
        assert_eq!(nothing.unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
        (accepted, peer)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// What a running parking task took out: each connection's name and when, since
    /// the start.
    type Log = Rc<RefCell<Vec<(&'static str, Duration)>>>;

    /// `parking`'s task, running; stop it with `stop` and await `task`.
    struct Running {
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
        served: Log,
        expired: Log,
    }

    fn start(parking: &Rc<Parking<Parked>>, since: Instant) -> Running {
        let (stop, shutdown) = watch::channel(false);
        let (served, expired) = (Log::default(), Log::default());
        let task = {
            let (parking, served, expired) =
                (Rc::clone(parking), Rc::clone(&served), Rc::clone(&expired));
            tokio::task::spawn_local(async move {
                parking
                    .run(
                        shutdown,
                        |c, _| served.borrow_mut().push((c.1, since.elapsed())),
                        |c| expired.borrow_mut().push((c.1, since.elapsed())),
                    )
                    .await
            })
        };
        Running {
            stop,
            task,
            served,
            expired,
        }
    }

    fn names(log: &Log) -> Vec<&'static str> {
        log.borrow().iter().map(|entry| entry.0).collect()
    }

    /// Sockets that turn readable come out to be served, each once and only those;
    /// the others expire at their deadlines, in order; at shutdown the rest are
    /// closed; and a socket readable when parked is handed straight back.
    #[test]
    fn parked_connections_leave_when_readable_expired_or_shut_down() {
        runtime().block_on(tokio::task::LocalSet::new().run_until(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let parking = Rc::new(Parking::<Parked>::default());
            let now = Instant::now();
            let mut peers = Vec::new();
            for (name, wait) in [("a", 100), ("b", 300), ("c", 60_000), ("d", 60_000)] {
                let (parked, peer) = pair(&listener).await;
                assert!(parking
                    .park(Parked(parked, name), now + Duration::from_millis(wait))
                    .is_ok());
                peers.push(peer);
            }
            assert_eq!(parking.len(), 4);
            let running = start(&parking, now);
            peers[2].write_all(b"GET").await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(names(&running.served), ["c"]);
            assert_eq!(names(&running.expired), ["a", "b"]);
            let (_, a_at) = running.expired.borrow()[0];
            let (_, b_at) = running.expired.borrow()[1];
            assert!(a_at >= Duration::from_millis(100) && b_at >= Duration::from_millis(300));
            assert_eq!(parking.len(), 1);

            // Readable when parked: handed back, not parked.
            let (ready, mut peer) = pair(&listener).await;
            peer.write_all(b"GET").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let back = parking.park(Parked(ready, "e"), now + Duration::from_secs(60));
            assert!(back.is_err());
            assert_eq!(parking.len(), 1);

            running.stop.send_replace(true);
            running.task.await.unwrap();
            assert!(parking.is_empty());
            assert_eq!(names(&running.served), ["c"], "d never woke");
            assert_eq!(
                names(&running.expired),
                ["a", "b", "d"],
                "d closed at shutdown"
            );
        }));
    }

    /// A connection parked after another but due before it (it woke with nothing to
    /// read and parked again) expires at its own deadline, not the other's.
    #[test]
    fn a_deadline_earlier_than_those_parked_before_it_is_kept() {
        runtime().block_on(tokio::task::LocalSet::new().run_until(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let parking = Rc::new(Parking::<Parked>::default());
            let started = Instant::now();
            let running = start(&parking, started);
            tokio::task::yield_now().await;
            let mut peers = Vec::new();
            for (name, wait) in [("late", 2_000), ("early", 200)] {
                let (parked, peer) = pair(&listener).await;
                let deadline = started + Duration::from_millis(wait);
                assert!(parking.park(Parked(parked, name), deadline).is_ok());
                peers.push(peer);
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(names(&running.expired), ["early"]);
            let (_, at) = running.expired.borrow()[0];
            assert!(at < Duration::from_millis(600), "{at:?}");
            running.stop.send_replace(true);
            running.task.await.unwrap();
        }));
    }

    /// A connection parked while nothing else is expires at its deadline; many parked,
    /// woken, parked again in the same slots: each wake-up serves its own connection,
    /// stale ones (an earlier parking of a reused slot) serve nothing.
    #[test]
    fn a_wake_up_serves_only_the_connection_parked_now() {
        runtime().block_on(tokio::task::LocalSet::new().run_until(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let parking = Rc::new(Parking::<Parked>::default());
            let running = start(&parking, Instant::now());
            let served = || running.served.borrow().len();
            // Parked while the task waits with nothing parked: it expires on time.
            tokio::task::yield_now().await;
            let (parked, _peer) = pair(&listener).await;
            assert!(parking
                .park(
                    Parked(parked, "soon"),
                    Instant::now() + Duration::from_millis(100)
                )
                .is_ok());
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(names(&running.expired), ["soon"]);
            let far = Instant::now() + Duration::from_secs(60);
            let mut peers = Vec::new();
            for _ in 0..50 {
                let (parked, peer) = pair(&listener).await;
                assert!(parking.park(Parked(parked, "x"), far).is_ok());
                peers.push(peer);
            }
            for peer in &mut peers {
                peer.write_all(b"x").await.unwrap();
            }
            let waited = Instant::now();
            while served() < 50 && waited.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(served(), 50);
            assert!(parking.is_empty());
            // The served ones were dropped (closed); park fresh ones in the same slots
            // and wake only one of them.
            let mut fresh = Vec::new();
            for _ in 0..50 {
                let (parked, peer) = pair(&listener).await;
                assert!(parking.park(Parked(parked, "y"), far).is_ok());
                fresh.push(peer);
            }
            fresh[7].write_all(b"x").await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(served(), 51);
            assert_eq!(parking.len(), 49);
            running.stop.send_replace(true);
            running.task.await.unwrap();
        }));
    }
}
