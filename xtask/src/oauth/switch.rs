//! A TCP switch on a free loopback port, standing in for the load balancer in front of two
//! mcp-proxy instances: both name its address as their `--public-url`, and each new
//! connection goes to the instance it is switched to at that moment, so a run can put a
//! sign-in on one instance and the refresh on the other (a balancer would pick for itself).
//! It counts the connections it gave each instance.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// The switch; stops accepting when dropped (connections it relays end with their peers).
pub(super) struct Switch {
    addr: SocketAddr,
    /// The port of the instance new connections go to.
    target: Arc<AtomicU16>,
    /// Connections given to each instance's port.
    counts: Arc<Mutex<HashMap<u16, u64>>>,
    stop: Arc<AtomicBool>,
}

impl Switch {
    /// Listens on a free loopback port; connections go nowhere until [`Switch::route_to`].
    pub(super) fn start() -> Result<Switch, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("cannot bind 127.0.0.1:0: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let switch = Switch {
            addr,
            target: Arc::new(AtomicU16::new(0)),
            counts: Arc::default(),
            stop: Arc::default(),
        };
        let (target, counts, stop) = (
            switch.target.clone(),
            switch.counts.clone(),
            switch.stop.clone(),
        );
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let port = target.load(Ordering::SeqCst);
                let Ok(backend) = TcpStream::connect(("127.0.0.1", port)) else {
                    // As a balancer with no healthy upstream: the connection is closed.
                    continue;
                };
                *counts.lock().expect("counts lock").entry(port).or_default() += 1;
                relay(client, backend);
            }
        });
        Ok(switch)
    }

    /// `http://127.0.0.1:PORT`: the public URL of the instances behind it.
    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// New connections go to the instance at `url` (`http://127.0.0.1:PORT`).
    pub(super) fn route_to(&self, url: &str) -> Result<(), String> {
        let port = port_of(url).ok_or_else(|| format!("no port in {url}"))?;
        self.target.store(port, Ordering::SeqCst);
        Ok(())
    }

    /// How many connections the instance at `url` was given so far.
    pub(super) fn connections_to(&self, url: &str) -> u64 {
        let counts = self.counts.lock().expect("counts lock");
        port_of(url)
            .and_then(|p| counts.get(&p).copied())
            .unwrap_or(0)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// The port of `http://127.0.0.1:PORT`.
fn port_of(url: &str) -> Option<u16> {
    url.rsplit(':').next()?.parse().ok()
}

/// Copies bytes both ways until each side ends its half.
fn relay(client: TcpStream, backend: TcpStream) {
    let pairs = [
        (client.try_clone(), backend.try_clone()),
        (backend.try_clone(), client.try_clone()),
    ];
    for (from, to) in pairs {
        let (Ok(mut from), Ok(mut to)) = (from, to) else {
            return;
        };
        thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}
