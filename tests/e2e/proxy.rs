//! A fault-injecting TCP proxy: forwards 127.0.0.1:<port> to a target until cut, then drops
//! every open connection and refuses new ones until restored — an object-store outage as the
//! client sees it, without losing the server's data.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) struct Proxy {
    pub(crate) port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

fn pipe(mut from: TcpStream, mut to: TcpStream, cut: Arc<AtomicBool>) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if !cut.load(Ordering::SeqCst) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Ok(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Proxy {
    pub(crate) fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(client); // refused while cut
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let _ = server.set_nodelay(true);
                if let (Ok(c1), Ok(s1)) = (client.try_clone(), server.try_clone()) {
                    o.lock().unwrap().extend([c1, s1]);
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (cut_a, cut_b) = (c.clone(), c.clone());
                std::thread::spawn(move || pipe(client, server, cut_a));
                std::thread::spawn(move || pipe(s2, c2, cut_b));
            }
        });
        Self { port, cut, open }
    }

    /// Starts an outage: open connections are dropped, new ones refused.
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Ends the outage.
    pub(crate) fn restore(&self) {
        self.open.lock().unwrap().clear();
        self.cut.store(false, Ordering::SeqCst);
    }
}
