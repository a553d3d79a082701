//! Delay between nodes without `sch_netem` (this kernel has none, and nftables can only drop):
//! a userspace TCP relay in the switch namespace. Each node advertises a relay address
//! (`relay_addr`) as its `connect_address`, so every connection one node opens to another —
//! Raft, the REST API, streaming replication, pg_rewind, pg_basebackup — passes the relay, which
//! forwards each chunk it reads once `delay` has passed since it arrived, in order, both ways.
//! Clients still reach the nodes directly. The delay can change at run time (0: no delay).
//!
//! `Drop` stops the listeners and every connection (they poll a stop flag between reads).

use crate::harness::pause;
use crate::net;
use pgha::clock;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a blocked thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

pub struct Relay {
    stop: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    listeners: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Listens on every `(listen, target)` pair inside namespace `ns` (the listen addresses
    /// must exist there) and forwards to the targets.
    pub fn start(ns: &str, routes: Vec<(SocketAddr, SocketAddr)>) -> Relay {
        let stop = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let mut listeners = Vec::new();
        for (listen, target) in routes {
            let (ns, stop, delay) = (ns.to_string(), stop.clone(), delay_ms.clone());
            let (ready_tx, ready_rx) = mpsc::channel();
            listeners.push(std::thread::spawn(move || {
                // Threads spawned from here inherit the namespace.
                net::enter(&ns);
                let l = TcpListener::bind(listen).unwrap_or_else(|e| panic!("relay bind {listen}: {e}"));
                l.set_nonblocking(true).expect("nonblocking listener");
                ready_tx.send(()).expect("relay started");
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((client, _)) => {
                            let (stop, delay) = (stop.clone(), delay.clone());
                            std::thread::spawn(move || connect_and_pipe(client, target, stop, delay));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => pause(POLL),
                        Err(_) => pause(POLL),
                    }
                }
            }));
            ready_rx.recv().expect("the relay listener starts");
        }
        Relay { stop, delay_ms, listeners }
    }

    /// The one-way delay each chunk gets, from now on.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for l in self.listeners.drain(..) {
            let _ = l.join();
        }
    }
}

fn connect_and_pipe(client: TcpStream, target: SocketAddr, stop: Arc<AtomicBool>, delay: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    for s in [&client, &server] {
        let _ = s.set_nodelay(true);
        let _ = s.set_nonblocking(false);
    }
    let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
    let up = {
        let (stop, delay) = (stop.clone(), delay.clone());
        std::thread::spawn(move || pipe(client, server, stop, delay))
    };
    pipe(s2, c2, stop, delay);
    let _ = up.join();
}

/// Copies `from` to `to`, each chunk held until `delay` after it was read; a reader thread
/// queues chunks with their arrival time, this thread writes them when due.
fn pipe(mut from: TcpStream, mut to: TcpStream, stop: Arc<AtomicBool>, delay: Arc<AtomicU64>) {
    let (tx, rx) = mpsc::channel::<(clock::BootInstant, Vec<u8>)>();
    let reader_stop = stop.clone();
    let from_ctl = from.try_clone().expect("clone");
    let reader = std::thread::spawn(move || {
        let _ = from.set_read_timeout(Some(POLL));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if reader_stop.load(Ordering::Relaxed) {
                break;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send((clock::boot_now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = from.shutdown(Shutdown::Read);
    });
    loop {
        match rx.recv_timeout(POLL) {
            Ok((at, chunk)) => {
                let due = Duration::from_millis(delay.load(Ordering::Relaxed));
                let waited = clock::boot_now().saturating_since(at);
                if waited < due {
                    pause(due - waited);
                }
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    // The reader stops at once: its reads end, its sends fail.
    drop(rx);
    let _ = from_ctl.shutdown(Shutdown::Read);
    let _ = reader.join();
}
